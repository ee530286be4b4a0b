"""python -m common.doctor: every fault the test injects is named, with its fix.

The doctor runs as a process, as a student runs it, on a .env written by the
test: ports the OS picked, broadcast on 127.255.255.255, a display or none.
"""
from __future__ import annotations

import re
import socket
import sys

import pytest

from common import doctor, net, noise
from tests.procs import ROOT, Processes, create_test_env_file, free_port
from tests.xvfb import xvfb_display  # noqa: F401  (a fixture)

BROADCAST = "127.255.255.255"


def env_file(tmp_path, **settings: str):
    """A fresh .env with free ports, and ``settings`` (name -> value) on top."""
    path = create_test_env_file(tmp_path / ".env")
    values = {"LAB1_PORT": str(free_port(socket.SOCK_STREAM)), "LAB2_PORT": str(free_port(socket.SOCK_STREAM)),
              "BROADCAST_ADDR": BROADCAST, "BROADCAST_PORT": str(free_port(socket.SOCK_DGRAM)), **settings}
    lines = [line for line in path.read_text().splitlines() if line.partition("=")[0] not in values]
    path.write_text("\n".join(lines + [f"{name}={value}" for name, value in values.items()]) + "\n")
    return path, values


def run_doctor(path, display: str | None = None) -> tuple[int, str]:
    with Processes() as processes:
        doctor = processes.start("common.doctor", "--env", str(path),
                                 env={"DISPLAY": display, "WAYLAND_DISPLAY": None})
        code = doctor.wait_exit()
        return code, "\n".join(doctor.stdout_lines)


@pytest.mark.network
@pytest.mark.points(2)
def test_doctor_names_a_port_in_use_with_its_fix_and_takes_no_display_for_headless_mode(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as held:      # a server still running, say
        held_port = held.getsockname()[1]
        path, values = env_file(tmp_path, LAB1_PORT=str(held_port))
        code, report = run_doctor(path)
    assert code == 1, report
    assert re.search(rf"^FAIL  LAB1_PORT={held_port} \(TCP\) cannot be used.*\n      fix: stop the program",
                     report, re.MULTILINE), report
    assert f"ok    LAB2_PORT={values['LAB2_PORT']} (TCP) is free" in report
    assert f"ok    a broadcast to {BROADCAST}:{values['BROADCAST_PORT']} came back" in report
    assert re.search(r"^ok    interface lo 127\.0\.0\.1/8 broadcast 127\.255\.255\.255$", report, re.MULTILINE)
    assert re.search(r"^ok    no display .*--headless", report, re.MULTILINE), report
    assert report.endswith("1 problem(s) found")


@pytest.mark.points(2)
@pytest.mark.parametrize("broken, expected", [
    ({"SERVER_PUBLIC_KEY": noise.generate_keypair()[1].hex()}, "SERVER_PRIVATE_KEY does not match SERVER_PUBLIC_KEY"),
    ({"CHAT_PSK": "abc123"}, "CHAT_PSK from .* must be 64 hex digits"),
    ({"CHAT_PSK": ""}, "CHAT_PSK is not set"),
], ids=["keys-do-not-match", "short-key", "missing-key"])
def test_doctor_names_what_is_wrong_in_the_env_file(tmp_path, broken, expected):
    path, _ = env_file(tmp_path, **broken)
    code, report = run_doctor(path)
    assert code == 1
    assert re.search(rf"^FAIL  .*\.env: .*{expected}.*\n      fix: copy the server's \.env again", report,
                     re.MULTILINE), report


@pytest.mark.points(1)
def test_doctor_says_how_to_get_an_env_file_when_there_is_none(tmp_path):
    code, report = run_doctor(tmp_path / ".env")
    assert code == 1
    assert re.search(r"^FAIL  .*\.env does not exist\n      fix: on the server: start it once", report, re.MULTILINE)


@pytest.mark.gui
@pytest.mark.network
@pytest.mark.linux_only("loopback broadcast")
@pytest.mark.points(1)
def test_doctor_finds_nothing_wrong_on_a_healthy_machine(tmp_path, xvfb_display):
    path, _ = env_file(tmp_path)
    code, report = run_doctor(path, display=xvfb_display)
    assert code == 0, report
    assert "FAIL" not in report and report.endswith("all good")
    assert re.search(r"^ok    tkinter .* opens windows$", report, re.MULTILINE)


@pytest.mark.points(1)
@pytest.mark.parametrize("platform, own_words, foreign_words", [
    ("darwin", ["lsof -nP -iTCP:", "brew install python-tk", "application firewall", "Local Network", "ifconfig"],
     ["ss -l", "apt-get", "iproute2", "nft", "ufw", "Windows", "netstat"]),
    ("win32", ["netstat -ano -p tcp", "tcl/tk", "Windows Defender Firewall", "Public", "Private", "ipconfig"],
     ["ss -l", "apt-get", "iproute2", "nft", "ufw", "lsof", "brew", "macOS"]),
    ("linux", ["ss -ltnp", "apt-get install python3-tk", "nft", "ufw"],
     ["lsof", "brew", "Windows", "netstat", "macOS", "ipconfig"]),
])
def test_doctor_gives_each_fix_in_the_words_of_the_students_system(monkeypatch, platform, own_words, foreign_words):
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(doctor, "interfaces", lambda: [])   # as on a system without iproute2's ip -j
    with socket.create_server(("127.0.0.1", 0)) as held:   # a port in use: the fix names its program
        port_check = doctor.check_tcp_port("LAB1_PORT", held.getsockname()[1])
    assert port_check.fix
    advice = "\n".join([port_check.fix, doctor.tkinter_fix(), doctor.firewall_fix(5061),
                        *(str(check) for check in doctor.check_interfaces(None))])
    for words in own_words:
        assert words in advice, (words, advice)
    for words in foreign_words:
        assert words not in advice, (words, advice)


@pytest.mark.points(1)
def test_the_handout_names_each_systems_firewall_as_the_deaf_warning_does():
    handout = " ".join((ROOT / "docs" / "lab2.md").read_text(encoding="utf-8").split())
    for platform in ("win32", "darwin", "linux"):
        assert net.firewall_causes(platform) in handout, platform
    assert "no room datagram has arrived for 1.5 s: broadcast may be blocked on UDP port" in handout


@pytest.mark.parametrize("release, says, fails", [
    ("51.0.1", "cryptography 51.0.1", False),
    ("48.0.1", "cryptography 48.0.1 (enough for a client; a server warns below 50)", False),
    ("44.0.3", "cryptography 44.0.3 is older than 45", True),
])
def test_doctor_takes_a_cryptography_from_45_and_says_a_server_wants_50(monkeypatch, release, says, fails):
    """48 is the newest release with a wheel for 32-bit Windows and Intel Macs: enough for a client."""
    monkeypatch.setattr(doctor.metadata, "version", lambda name: release)
    [check] = [check for check in doctor.check_versions() if "cryptography" in check.what]
    assert check.what == says
    assert bool(check.fix) == fails
    if fails:
        assert "pip install --upgrade 'cryptography>=45'" in check.fix
