"""Settings: first-run key generation, precedence, and clear errors for bad values."""

import argparse
import re
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from dotenv import dotenv_values

from common.accounts import Argon2Cost
from common.config import ConfigError, add_setting_options, create_env_file, load_settings, settings_from
from common.room import ROOM_HISTORY_BYTES, ROOM_HISTORY_EVENTS, ROOM_KEY_INTERVAL_SECONDS

SETTING_NAMES = [
    "CHAT_PSK",
    "SERVER_PRIVATE_KEY",
    "SERVER_PUBLIC_KEY",
    "SERVER_HOST",
    "LAB1_PORT",
    "LAB2_PORT",
    "BROADCAST_ADDR",
    "BROADCAST_PORT",
    "MULTICAST_GROUP",
    "DB_PATH",
    "POLL_INTERVAL_MS",
    "WINDOW_LINES",
    "MAX_CLIENTS",
    "MAX_CLIENTS_PER_ADDRESS",
    "MAX_MESSAGES_PER_SECOND",
    "MAX_IDLE_SECONDS",
    "ROOM_HISTORY_EVENTS",
    "ROOM_HISTORY_BYTES",
    "ROOM_KEY_INTERVAL_MS",
    "MAX_NEW_ACCOUNTS_PER_HOUR",
    "ARGON2_MEMORY_KIB",
    "ARGON2_ITERATIONS",
]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test starts with none of the kit's settings in the process environment."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


def ignore_announcement(_message):
    """Tests that aren't about the first-run message pass this, to keep output quiet."""


def env_file_with(tmp_path, **changes):
    """Create a fresh .env in tmp_path, then set some of its lines to new values."""
    path = tmp_path / ".env"
    create_env_file(path)
    text = path.read_text(encoding="utf-8")
    for name, value in changes.items():
        text = re.sub(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path, overrides=None, *, create=True):
    """Load settings that must be refused; return the error message."""
    with pytest.raises(ConfigError) as failure:
        load_settings(path, overrides, create=create, announce=ignore_announcement)
    return str(failure.value)


# --- first run -----------------------------------------------------------------------


@pytest.mark.points(3)
def test_first_run_creates_an_env_file_with_fresh_keys_and_says_so(tmp_path):
    path = tmp_path / ".env"
    announcements = []
    settings = load_settings(path, announce=announcements.append)
    assert path.exists()
    assert len(announcements) == 1 and str(path) in announcements[0]
    assert len(settings.psk) == 32
    private_key = X25519PrivateKey.from_private_bytes(settings.server_private_key)
    assert private_key.public_key().public_bytes_raw() == settings.server_public_key
    # A second run reads the same file: same keys, nothing announced.
    again = load_settings(path, announce=announcements.append)
    assert again == settings
    assert len(announcements) == 1


@pytest.mark.points(2)
def test_two_first_runs_get_different_keys(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load_settings(tmp_path / "a" / ".env", announce=ignore_announcement)
    second = load_settings(tmp_path / "b" / ".env", announce=ignore_announcement)
    assert first.psk != second.psk
    assert first.server_private_key != second.server_private_key
    assert first.server_public_key != second.server_public_key


@pytest.mark.points(2)
@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no Unix permission bits")
def test_created_env_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / ".env"
    create_env_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.points(1)
def test_an_existing_env_file_is_never_overwritten(tmp_path):
    path = env_file_with(tmp_path)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(FileExistsError):
        create_env_file(path)
    assert path.read_text(encoding="utf-8") == before


@pytest.mark.points(2)
def test_missing_env_file_without_create_is_an_error(tmp_path):
    path = tmp_path / ".env"
    assert str(path) in config_error(path, create=False)
    assert not path.exists()


@pytest.mark.points(1)
def test_generated_file_sets_every_setting_and_the_defaults_apply(tmp_path):
    path = env_file_with(tmp_path)
    assert list(dotenv_values(path)) == SETTING_NAMES
    settings = load_settings(path, announce=ignore_announcement)
    assert (settings.host, settings.lab1_port, settings.lab2_port) == ("127.0.0.1", 5050, 5060)
    assert (settings.broadcast_addr, settings.broadcast_port) == ("127.255.255.255", 5061)
    assert settings.db_path == "chat.db"
    assert settings.poll_interval_ms == 20
    assert (settings.max_clients, settings.max_messages_per_second) == (250, 20)
    # The room is built from these, so they must agree with its own defaults.
    assert (settings.room_history_events, settings.room_history_bytes, settings.room_key_interval_ms / 1000) == (
        ROOM_HISTORY_EVENTS, ROOM_HISTORY_BYTES, ROOM_KEY_INTERVAL_SECONDS)
    # The server builds its Argon2Cost from these, so they must agree with its defaults.
    cost = Argon2Cost()
    assert (settings.argon2_memory_kib, settings.argon2_iterations) == (
        cost.memory_kib,
        cost.iterations,
    )


@pytest.mark.points(1)
def test_env_example_documents_every_setting_with_its_default(tmp_path):
    example = dotenv_values(REPO_ROOT / ".env.example")
    generated = dotenv_values(env_file_with(tmp_path))
    assert list(example) == SETTING_NAMES
    for name in ("CHAT_PSK", "SERVER_PRIVATE_KEY", "SERVER_PUBLIC_KEY"):
        assert example[name] == ""  # keys are generated on first run, never shipped
    for name in SETTING_NAMES[3:]:
        assert example[name] == generated[name], name
    text = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    for name in SETTING_NAMES:
        # Each setting comes right after a comment line that explains it.
        assert re.search(rf"^# .*\n{name}=", text, flags=re.MULTILINE), name


# --- precedence ----------------------------------------------------------------------


@pytest.mark.points(2)
def test_environment_overrides_the_env_file(tmp_path, monkeypatch):
    path = env_file_with(tmp_path, LAB1_PORT="6000")
    assert load_settings(path, announce=ignore_announcement).lab1_port == 6000
    monkeypatch.setenv("LAB1_PORT", "7000")
    assert load_settings(path, announce=ignore_announcement).lab1_port == 7000


@pytest.mark.points(2)
def test_command_line_overrides_the_environment(tmp_path, monkeypatch):
    path = env_file_with(tmp_path, LAB1_PORT="6000")
    monkeypatch.setenv("LAB1_PORT", "7000")
    overrides = {"LAB1_PORT": "8000"}
    assert load_settings(path, overrides, announce=ignore_announcement).lab1_port == 8000


@pytest.mark.points(1)
def test_an_option_not_given_on_the_command_line_changes_nothing(tmp_path, monkeypatch):
    path = env_file_with(tmp_path)
    monkeypatch.setenv("LAB1_PORT", "7000")
    overrides = {"LAB1_PORT": None, "SERVER_HOST": None}
    settings = load_settings(path, overrides, announce=ignore_announcement)
    assert (settings.lab1_port, settings.host) == (7000, "127.0.0.1")


@pytest.mark.points(1)
def test_a_client_without_the_private_key_gets_none(tmp_path):
    path = env_file_with(tmp_path, SERVER_PRIVATE_KEY="")
    assert load_settings(path, announce=ignore_announcement).server_private_key is None


@pytest.mark.points(1)
def test_a_server_without_the_private_key_is_refused_by_name(tmp_path):
    path = env_file_with(tmp_path, SERVER_PRIVATE_KEY="")
    with pytest.raises(ConfigError, match=r"^SERVER_PRIVATE_KEY is not set in .*: the server needs it"):
        load_settings(path, for_server=True, announce=ignore_announcement)


@pytest.mark.points(1)
def test_setting_options_reach_the_settings_and_only_the_ones_given(tmp_path, monkeypatch):
    path = env_file_with(tmp_path, BROADCAST_PORT="7100")
    monkeypatch.setenv("SERVER_HOST", "127.0.0.5")
    parser = argparse.ArgumentParser()
    add_setting_options(parser, "SERVER_HOST", "LAB2_PORT", "BROADCAST_PORT")
    args = parser.parse_args(["--env", str(path), "--port", "6100"])
    assert args.port == 6100   # a port is a number from the start: argparse names a bad one
    settings = settings_from(args, create=False)
    assert (settings.lab2_port, settings.host, settings.broadcast_port) == (6100, "127.0.0.5", 7100)
    with pytest.raises(SystemExit):
        parser.parse_args(["--db", "x.sqlite3"])   # not one of this role's options


@pytest.mark.points(1)
def test_printing_settings_does_not_reveal_the_secrets(tmp_path):
    settings = load_settings(env_file_with(tmp_path), announce=ignore_announcement)
    shown = repr(settings)
    assert settings.psk.hex() not in shown and repr(settings.psk) not in shown
    assert repr(settings.server_private_key) not in shown


# --- bad values ----------------------------------------------------------------------


@pytest.mark.points(2)
@pytest.mark.parametrize("bad_key", ["0g" * 32, "00" * 31, "00" * 33])
def test_malformed_key_is_an_error_naming_the_setting_and_file(tmp_path, bad_key):
    path = env_file_with(tmp_path, CHAT_PSK=bad_key)
    message = config_error(path)
    assert "CHAT_PSK" in message and str(path) in message
    assert bad_key not in message  # a key, even a broken one, is never echoed


@pytest.mark.points(1)
def test_malformed_key_from_the_environment_names_the_environment(tmp_path, monkeypatch):
    path = env_file_with(tmp_path)
    monkeypatch.setenv("SERVER_PUBLIC_KEY", "abc")
    message = config_error(path)
    assert "SERVER_PUBLIC_KEY" in message and "environment" in message


@pytest.mark.points(1)
def test_missing_psk_is_an_error(tmp_path):
    path = env_file_with(tmp_path, CHAT_PSK="")
    assert "CHAT_PSK" in config_error(path)


@pytest.mark.points(2)
@pytest.mark.parametrize("bad_port", ["abc", "5.5", "-1", "65536"])
def test_a_bad_port_is_an_error_naming_the_setting_and_file(tmp_path, bad_port):
    path = env_file_with(tmp_path, LAB2_PORT=bad_port)
    message = config_error(path)
    assert "LAB2_PORT" in message and str(path) in message


@pytest.mark.points(1)
def test_server_port_0_means_any_free_port_but_the_broadcast_port_must_be_real(tmp_path):
    path = env_file_with(tmp_path)
    assert load_settings(path, {"LAB1_PORT": "0"}).lab1_port == 0
    assert "BROADCAST_PORT" in config_error(path, {"BROADCAST_PORT": "0"})


@pytest.mark.points(1)
def test_a_bad_port_on_the_command_line_names_the_command_line(tmp_path):
    message = config_error(env_file_with(tmp_path), {"BROADCAST_PORT": "99999"})
    assert "BROADCAST_PORT" in message and "command line" in message


@pytest.mark.points(2)
def test_private_key_that_does_not_match_the_public_key_is_an_error(tmp_path):
    stranger = X25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    path = env_file_with(tmp_path, SERVER_PUBLIC_KEY=stranger)
    assert "SERVER_PRIVATE_KEY does not match SERVER_PUBLIC_KEY" in config_error(path)


@pytest.mark.points(1)
def test_an_unknown_override_name_is_an_error(tmp_path):
    message = config_error(env_file_with(tmp_path), {"LAB_PORT": "5000"})
    assert "LAB_PORT" in message


@pytest.mark.points(1)
def test_multicast_group_must_be_a_multicast_address(tmp_path):
    path = env_file_with(tmp_path)
    assert load_settings(path, announce=ignore_announcement).multicast_group == ""
    assert load_settings(path, {"MULTICAST_GROUP": "239.1.2.3"}).multicast_group == "239.1.2.3"
    for wrong in ("10.0.0.255", "239.1.2", "not an address"):
        assert "MULTICAST_GROUP" in config_error(path, {"MULTICAST_GROUP": wrong})
