"""Settings: keys, addresses and limits, read from .env, the environment and the command line.

A role script names the settings its command line may set, and loads them once:
    add_setting_options(parser, "SERVER_HOST", "LAB1_PORT")   # --host, --port
    settings = settings_from(parser.parse_args())

A value is looked up in four places, and the first one that sets it wins:
    1. the command line (overrides),
    2. the process environment (export LAB1_PORT=6000),
    3. the .env file,
    4. the defaults below.
That order lets the instructor keep one .env for the class while a student tries another
port for one run without editing it.

On a first run there is no .env, and load_settings writes one with fresh random keys and
says so. The keys exist only in that file: nothing in the source can leak them, and each
class gets its own. Clients need the server's keys, so a client passes create=False and
uses a copy of the server's file.
"""

import argparse
import ipaddress
import os
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from common.noise import KEY_BYTES, generate_keypair, public_key_of

# KEY_BYTES (noise.py): the PSK and both X25519 keys, each written as 64 hex digits.

# Every setting: its name, its default ("" means no default) and the comment that
# documents it in a generated .env. The file .env.example repeats these; a test keeps the
# two in step.
_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("CHAT_PSK", "",
     "The members' pre-shared key, 64 hex digits (32 random bytes). Only holders of it "
     "can complete the handshake. Generated on first run."),
    ("SERVER_PRIVATE_KEY", "",
     "The server's static X25519 private key, 64 hex digits. Only the server needs it: "
     "leave it out of the copies on client machines. Generated on first run."),
    ("SERVER_PUBLIC_KEY", "",
     "The public half of that key. Clients pin it and refuse a server that cannot prove "
     "it holds the private half. Generated on first run."),
    ("SERVER_HOST", "127.0.0.1",
     "The server's address: 127.0.0.1 for a demo on one machine, the server's LAN "
     "address for a class."),
    ("LAB1_PORT", "5050", "TCP port of the Lab 1 one-to-one chat server."),
    ("LAB2_PORT", "5060", "TCP port of the Lab 2 room server (login, DMs, repairs)."),
    ("BROADCAST_ADDR", "127.255.255.255",
     "Where Lab 2 room datagrams are broadcast. 127.255.255.255 reaches every client on "
     "this machine; on a LAN use the subnet's broadcast address, e.g. 192.168.1.255."),
    ("BROADCAST_PORT", "5061", "UDP port that every Lab 2 client binds to hear the room."),
    ("MULTICAST_GROUP", "",
     "Empty: the Lab 2 room is broadcast to BROADCAST_ADDR. An IPv4 multicast group, e.g. "
     "239.255.0.1: the room goes to that group instead, and only hosts that joined it get "
     "the datagrams (239.0.0.0/8 is for use inside one organisation)."),
    ("DB_PATH", "chat.db", "sqlite3 file with accounts and ignore lists (server only)."),
    ("POLL_INTERVAL_MS", "20",
     "How long a window waits for its sockets before it handles its own events (keys, "
     "redraws), in milliseconds. A packet is served the moment it arrives either way."),
    ("WINDOW_LINES", "3000",
     "Most lines a window's transcript keeps: the oldest go beyond it, so a long class never "
     "slows the window down. stdout and /hash keep everything."),
    ("MAX_CLIENTS", "250", "Most clients the Lab 2 server serves at once (at most 500: a /who "
     "answer lists them all in one record)."),
    ("MAX_CLIENTS_PER_ADDRESS", "20",
     "Most of them from one IP address, so that one machine cannot fill the room. A class "
     "on one machine (everyone on 127.0.0.1), or behind one NAT router, needs it raised."),
    ("MAX_MESSAGES_PER_SECOND", "20", "Most messages one client may send per second."),
    ("MAX_IDLE_SECONDS", "1800",
     "A Lab 2 member the server hears nothing from for this long (30 minutes) is removed, to "
     "free its place. A running client asks the server something at least once a minute, so "
     "a student who only reads is never idle; a program that hung is. 0: no limit."),
    ("ROOM_HISTORY_EVENTS", "10000",
     "Most Lab 2 room events the server keeps, for late joiners and repairs; older ones are "
     "shown to them as one numbered line, \"N earlier messages not kept\". 10000 keeps a whole "
     "3-hour class of 250 members who each say a line every 5 minutes."),
    ("ROOM_HISTORY_BYTES", "2000000",
     "Most bytes of room events the server keeps (as encoded), whichever limit comes first. "
     "Members who talk as fast as MAX_MESSAGES_PER_SECOND lets them fill it in seconds, and "
     "the server's memory stays flat; a late joiner's history is one second of what one "
     "address may download (2000000 bytes a second)."),
    ("ROOM_KEY_INTERVAL_MS", "1000",
     "The shortest time between two new Lab 2 room keys, in milliseconds. A leave makes a "
     "new key; a leave sooner than this after the last one waits, and the member who left "
     "can read the room until then. Members who log in and out in a loop then cannot make "
     "the room change keys faster than datagrams travel."),
    ("MAX_NEW_ACCOUNTS_PER_HOUR", "100",
     "Most accounts one IP address may register in an hour (both labs), so that a program "
     "registering names in a loop cannot fill the server's disk."),
    ("ARGON2_MEMORY_KIB", "19456",
     "Password-hash cost: memory per Argon2id hash, in KiB. OWASP's minimum is 19456 "
     "KiB, or 19 MiB. A change affects new hashes only; old ones keep their cost."),
    ("ARGON2_ITERATIONS", "2", "Password-hash cost: passes over that memory (OWASP minimum: 2)."),
)
_DEFAULTS = {name: default for name, default, _comment in _SETTINGS}

_GENERATED_HEADER = """\
# Chat lab kit settings, generated with fresh random keys.
# Keep this file secret: CHAT_PSK lets anyone join, and SERVER_PRIVATE_KEY lets anyone
# pose as the server. Copy it to every client machine, minus the SERVER_PRIVATE_KEY line.
# Precedence: command line > environment variables > this file > built-in defaults.
"""


class ConfigError(ValueError):
    """A setting that is missing, malformed, or inconsistent with another one.

    The message names the setting and where its value came from. This is not a
    ProtocolError: that means "drop this one peer", while a bad setting means the program
    cannot start at all.
    """


@dataclass(frozen=True)
class Settings:
    """Everything a role script needs to know before it opens a socket."""

    # repr=False: printing or logging a Settings object must not reveal the secrets.
    psk: bytes = field(repr=False)  # CHAT_PSK: the members' pre-shared key
    server_private_key: bytes | None = field(repr=False)  # None on client machines
    server_public_key: bytes  # clients pin it
    host: str
    lab1_port: int
    lab2_port: int
    broadcast_addr: str
    broadcast_port: int
    multicast_group: str   # "" when the room is broadcast
    db_path: str
    poll_interval_ms: int
    window_lines: int
    max_clients: int
    max_clients_per_address: int
    max_messages_per_second: int
    max_idle_seconds: int
    room_history_events: int
    room_history_bytes: int
    room_key_interval_ms: int
    max_new_accounts_per_hour: int
    argon2_memory_kib: int
    argon2_iterations: int


def _print_to_stderr(message: str) -> None:
    # stderr, not stdout: stdout carries the transcript in headless mode.
    print(message, file=sys.stderr)


# The settings a role may also take on its command line: setting -> (option, metavar, type, help).
_OPTIONS: dict[str, tuple[str, str, type, str]] = {
    "SERVER_HOST": ("--host", "ADDRESS", str, "the server's address: where a server listens (0.0.0.0: every IPv4 "
                    "interface, for a LAN; ::, every IPv6 and IPv4 one), what a client reaches (each "
                    "address a host name stands for, in turn)"),
    "LAB1_PORT": ("--port", "PORT", int, "the server's TCP port; 0 lets the server's OS pick a free one"),
    "LAB2_PORT": ("--port", "PORT", int, "the server's TCP port; 0 lets the server's OS pick a free one"),
    "BROADCAST_ADDR": ("--broadcast-addr", "ADDRESS", str, "where the server sends room datagrams"),
    "BROADCAST_PORT": ("--broadcast-port", "PORT", int, "the UDP port the room is heard on"),
    "MULTICAST_GROUP": ("--multicast", "ADDRESS", str, "send and hear the room on this multicast group instead"),
    "DB_PATH": ("--db", "FILE", str, "the sqlite3 file of the accounts"),
}


def add_setting_options(parser: argparse.ArgumentParser, *names: str) -> None:
    """Give each named setting an option on the command line (SERVER_HOST is
    --host); a value given there wins over the environment and the env file,
    which --env names."""
    parser.add_argument("--env", default=".env", metavar="FILE",
                        help="the settings file (default: .env); a server creates it with fresh keys "
                             "if it is missing, a client needs a copy of the server's")
    destinations = {}   # setting -> where argparse keeps its value (--broadcast-addr: broadcast_addr)
    for name in names:
        option, metavar, kind, text = _OPTIONS[name]
        action = parser.add_argument(option, type=kind, metavar=metavar, help=f"{text} (default: {name})")
        destinations[name] = action.dest
    parser.set_defaults(setting_options=destinations)


def settings_from(args: argparse.Namespace, *, create: bool = True, for_server: bool = False) -> Settings:
    """load_settings() from ``args.env``, with the options add_setting_options() gave."""
    overrides = {name: getattr(args, destination) for name, destination in args.setting_options.items()}
    return load_settings(args.env, overrides, create=create, for_server=for_server)


def load_settings(
    env_file: str | os.PathLike = ".env",
    overrides: Mapping[str, object] | None = None,
    *,
    create: bool = True,
    for_server: bool = False,
    announce: Callable[[str], None] = _print_to_stderr,
) -> Settings:
    """Read the settings and return them, checked and parsed.

    overrides holds command-line values keyed by setting name ("LAB1_PORT"); None means
    the option was not given. If env_file does not exist and create is true, a new one
    with fresh keys is written first and announce() reports it.
    Raises ConfigError if env_file is missing and create is false (a client must use
    the server's keys, not make its own), for an unknown override name, for a missing
    or malformed value, if SERVER_PRIVATE_KEY does not match SERVER_PUBLIC_KEY, and,
    for_server, if there is no SERVER_PRIVATE_KEY.
    """
    path = Path(env_file)
    if not path.exists():
        if not create:
            raise ConfigError(
                f"{path} not found: copy the .env from the server machine, "
                "or run the server once to create one"
            )
        create_env_file(path)
        announce(
            f"created {path} with fresh random keys; copy it to every client machine "
            "(clients don't need SERVER_PRIVATE_KEY)"
        )
    overrides = {name: None if value is None else str(value) for name, value in (overrides or {}).items()}
    unknown = sorted(overrides.keys() - _DEFAULTS.keys())
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    sources = _Sources(
        path,
        [
            ("the command line", overrides),
            ("the environment", os.environ),
            # interpolate=False: "${VAR}" in the file stays literal text, so a value means
            # exactly what is written there.
            (str(path), dotenv_values(path, interpolate=False)),
        ],
    )
    settings = Settings(
        psk=sources.key("CHAT_PSK"),
        server_private_key=sources.optional_key("SERVER_PRIVATE_KEY"),
        server_public_key=sources.key("SERVER_PUBLIC_KEY"),
        host=sources.text("SERVER_HOST"),
        # Port 0 asks the OS for any free port; the server prints the one it got.
        lab1_port=sources.port("LAB1_PORT", minimum=0),
        lab2_port=sources.port("LAB2_PORT", minimum=0),
        broadcast_addr=sources.text("BROADCAST_ADDR"),
        broadcast_port=sources.port("BROADCAST_PORT"),
        multicast_group=sources.multicast_group("MULTICAST_GROUP"),
        db_path=sources.text("DB_PATH"),
        poll_interval_ms=sources.integer("POLL_INTERVAL_MS", minimum=1),
        window_lines=sources.integer("WINDOW_LINES", minimum=1),
        max_clients=sources.integer("MAX_CLIENTS", minimum=1, maximum=500),
        max_clients_per_address=sources.integer("MAX_CLIENTS_PER_ADDRESS", minimum=1),
        max_messages_per_second=sources.integer("MAX_MESSAGES_PER_SECOND", minimum=1),
        max_idle_seconds=sources.integer("MAX_IDLE_SECONDS", minimum=0),
        # A window of fewer than 2 events, or smaller than one event, could keep nothing.
        room_history_events=sources.integer("ROOM_HISTORY_EVENTS", minimum=2),
        room_history_bytes=sources.integer("ROOM_HISTORY_BYTES", minimum=4096),
        room_key_interval_ms=sources.integer("ROOM_KEY_INTERVAL_MS", minimum=0),
        max_new_accounts_per_hour=sources.integer("MAX_NEW_ACCOUNTS_PER_HOUR", minimum=1),
        # Argon2 refuses less than 8 KiB of memory per lane; the kit uses one lane.
        argon2_memory_kib=sources.integer("ARGON2_MEMORY_KIB", minimum=8),
        argon2_iterations=sources.integer("ARGON2_ITERATIONS", minimum=1),
    )
    if for_server and settings.server_private_key is None:
        raise ConfigError(f"SERVER_PRIVATE_KEY is not set in {path}: the server needs it (is this a client's copy?)")
    # Two keys that are not a pair would only show up later, as a failed handshake on
    # every client. Checking here gives the real cause instead.
    if settings.server_private_key is not None:
        if public_key_of(settings.server_private_key) != settings.server_public_key:
            raise ConfigError(
                "SERVER_PRIVATE_KEY does not match SERVER_PUBLIC_KEY "
                f"(check {path} and the environment): clients would refuse this server"
            )
    return settings


class _Sources:
    """Finds each setting in the first source that sets it, and parses it."""

    def __init__(
        self, env_file: Path, layers: list[tuple[str, Mapping[str, str | None]]]
    ) -> None:
        self._env_file = env_file
        self._layers = layers  # (where, values) pairs, highest precedence first

    def _raw(self, name: str) -> tuple[str, str]:
        """Return (value, where it came from); the value is "" if no source sets it."""
        for where, values in self._layers:
            value = values.get(name)
            # None (a command-line option not given, or a bare "NAME" line in .env) or
            # "" ("NAME=") means "not set here": keep looking in the next source.
            if value:
                return value, where
        return _DEFAULTS[name], "the defaults"

    def text(self, name: str) -> str:
        return self._raw(name)[0]

    def optional_key(self, name: str) -> bytes | None:
        """Return a 32-byte key from 64 hex digits, or None if no source sets it."""
        value, where = self._raw(name)
        if not value:
            return None
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            # The message never quotes the value: a key, even a mistyped one, must not end
            # up in a log or a screenshot.
            raise ConfigError(f"{name} from {where} must be {2 * KEY_BYTES} hex digits")
        return key

    def key(self, name: str) -> bytes:
        key = self.optional_key(name)
        if key is None:
            raise ConfigError(
                f"{name} is not set in {self._env_file} or the environment: copy the "
                f"server's .env here (on the server itself, remove {self._env_file} to "
                "have new keys made)"
            )
        return key

    def integer(self, name: str, *, minimum: int, maximum: int | None = None) -> int:
        value, where = self._raw(name)
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} from {where} is not a whole number") from None
        if number < minimum or (maximum is not None and number > maximum):
            allowed = f"at least {minimum}" if maximum is None else f"{minimum}-{maximum}"
            raise ConfigError(f"{name}={number} from {where} is out of range ({allowed})")
        return number

    def multicast_group(self, name: str) -> str:
        """An IPv4 multicast address (224.0.0.0-239.255.255.255), or "" if not set."""
        value, where = self._raw(name)
        try:
            is_group = not value or ipaddress.IPv4Address(value).is_multicast
        except ValueError:
            is_group = False
        if not is_group:
            raise ConfigError(f"{name}={value!r} from {where} is not an IPv4 multicast "
                              "address (224.0.0.0 to 239.255.255.255)")
        return value

    def port(self, name: str, minimum: int = 1) -> int:
        return self.integer(name, minimum=minimum, maximum=65535)


def create_env_file(path: str | os.PathLike) -> None:
    """Write a new .env at path: fresh random keys, and every other setting at its default.

    Only the owner can read or write the file (mode 0600), because it holds secrets.
    Raises FileExistsError rather than replace an existing file: new keys would lock
    out every client that has the old ones.
    """
    private_key, public_key = generate_keypair()
    values = {
        "CHAT_PSK": os.urandom(KEY_BYTES).hex(),
        "SERVER_PRIVATE_KEY": private_key.hex(),
        "SERVER_PUBLIC_KEY": public_key.hex(),
    }
    lines = [_GENERATED_HEADER]
    for name, default, comment in _SETTINGS:
        lines += ["# " + line for line in textwrap.wrap(comment, width=86)]
        lines += [f"{name}={values.get(name, default)}", ""]
    # O_EXCL makes the call fail if the file already exists. The mode is set as the
    # file is created. Writing first and calling chmod afterwards would leave a moment
    # when other users could read the keys. Windows ignores these mode bits, and the
    # file gets the folder's permissions instead.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as env_file:
        env_file.write("\n".join(lines))
