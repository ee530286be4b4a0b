"""Lab 1 through its command-line contract: the real role scripts, run as
processes, talking over loopback (docs/lab1.md lists the contract).

Every process is killed at teardown, pass or fail; every wait has a deadline.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from common import noise
from common.admission import LAB1_LIMITS
from common.config import load_settings
from common.messages import ChatMessage, Goodbye, Login, LoginAccepted, Register
from common.session import SecureSession
from lab1_tcp.server import (
    HANDSHAKE_TIMEOUT_SECONDS,
    LOGIN_TIMEOUT_SECONDS,
    MAX_OUTGOING_BYTES,
)
from tests.procs import (
    DEADLINE_SECONDS,
    ROOT,
    SERVER_START_SECONDS,
    Processes,
    RoleProcess,
    attachment,
    create_test_env_file,
    has_ipv6_loopback,
    role_command,
    role_overrides,
    unopenable_database,
)
from tests.raw_peer import receive_until, register_raw, send_queued
from tests.tcp_proxy import ChunkingProxy
from tests.xvfb import type_into_window, xdotool, xvfb_display  # noqa: F401  (a fixture)

SERVER, CLIENT = "lab1_tcp.server", "lab1_tcp.client"
PASSWORD = "correct horse battery"
HANDSHAKE_MISMATCH = ("the server closed the connection during the handshake: the pre-shared "
                      "key or the server's public key does not match, or the server refuses "
                      "your address (too many connections from it, or banned)")


class Lab:
    """One server's env file and database, and helpers to start the roles."""

    def __init__(self, tmp_path, processes: Processes) -> None:
        self.tmp_path = tmp_path
        self.processes = processes
        self.env_file = create_test_env_file(tmp_path / "server.env")
        self.client_env = self.client_env_file("client.env")
        self.host, self.port = "127.0.0.1", 0

    def client_env_file(self, file_name: str, **changes: str):
        """A copy of the server's env file as a client gets it: without the
        private key, and with ``changes`` (setting name -> value) applied."""
        lines = []
        for line in self.env_file.read_text().splitlines():
            name = line.partition("=")[0]
            if name == "SERVER_PRIVATE_KEY":
                continue
            lines.append(f"{name}={changes[name]}" if name in changes else line)
        path = self.tmp_path / file_name
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_server(self, *args: str, headless: bool = True, env=None,
                     host: str = "127.0.0.1", stdout=subprocess.PIPE) -> RoleProcess:
        if attachment():   # pytest --attach: the student's server, started by hand
            server = self.processes.attach(SERVER, bool(args or env or not headless or host != "127.0.0.1"))
            self.env_file, self.host, self.port = server.env_file, server.host, server.port
            self.client_env = self.client_env_file("client.env")
            return server
        server = self.processes.start(
            SERVER, "--host", host, "--port", "0", "--env", str(self.env_file),
            "--db", str(self.tmp_path / "chat.db"), *(["--headless"] if headless else []), *args,
            env=env, stdout=stdout)
        shown_host = f"[{host}]" if ":" in host else host
        self.port = int(server.wait_for_stderr(rf"^listening on {re.escape(shown_host)}:(\d+)$",
                                               timeout=SERVER_START_SECONDS).group(1))
        return server

    def start_client(self, name: str, *args: str, password: str = PASSWORD, env_file=None,
                     port: int | None = None, headless: bool = True, env=None,
                     host: str | None = None, stdout=subprocess.PIPE) -> RoleProcess:
        return self.processes.start(
            CLIENT, "--host", host or self.host, "--port", str(port or self.port), "--name", name,
            "--env", str(env_file or self.client_env), *(["--headless"] if headless else []),
            *args, env={"CHAT_PASSWORD": password, **(env or {})}, stdout=stdout)

    def logged_in_client(self, name: str, *args: str, **options) -> RoleProcess:
        client = self.start_client(name, *args, **options)
        client.wait_for_stderr(rf"^logged in as {name.lower()}$")
        return client


@pytest.fixture
def lab(tmp_path):
    with Processes() as processes:
        yield Lab(tmp_path, processes)


def transcript(process: RoleProcess, sender: str) -> list[str]:
    """The texts of ``sender``'s lines in ``process``'s stdout, in order."""
    prefix = f"{sender}: "
    return [line[len(prefix):] for line in process.stdout_lines if line.startswith(prefix)]


def free_port() -> int:
    """A port nobody listens on (the OS just gave it out and took it back)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def role_module(module: str):
    """The role module under test: the kit's, or a student's copy when grading (--role)."""
    path = role_overrides().get(module)
    if path is None:
        return importlib.import_module(module)
    spec = importlib.util.spec_from_file_location("graded_" + module.replace(".", "_"), path)
    role = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = role   # dataclasses look their module up while it runs
    spec.loader.exec_module(role)
    return role


def logged_in_raw_session(lab: Lab, name: str) -> tuple[socket.socket, SecureSession]:
    """Connect and log in from inside the test, to misbehave afterwards."""
    sock, session, received = register_raw(lab.port, lab.client_env, name, PASSWORD)
    receive_until(sock, session, received, LoginAccepted)
    return sock, session


def idle_connection(lab: Lab, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection from ``source`` (any 127.x.y.z address is this machine)
    that never says a word: what a stranger without the key can open."""
    return socket.create_connection(("127.0.0.1", lab.port), timeout=DEADLINE_SECONDS,
                                    source_address=(source, 0))


def handshaken_raw_session(lab: Lab, source: str = "127.0.0.1") -> tuple[socket.socket, SecureSession]:
    """A member's connection from ``source`` that completes the handshake and then waits."""
    settings = load_settings(lab.client_env, create=False)
    sock = idle_connection(lab, source)
    session = SecureSession.client(settings.psk, settings.server_public_key)
    while not session.established:
        send_queued(sock, session)
        assert not session.receive(sock.recv(65536))
    return sock, session


def closed_by_the_server(sock: socket.socket) -> bool:
    """Wait (the socket's timeout is the deadline) for the server to close it."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass   # a reset is a close too: the server dropped unread bytes
    return True


def with_sitecustomize(tmp_path, code: str) -> dict[str, str]:
    """The environment for a role process that runs ``code`` as it starts:
    Python imports a sitecustomize.py it finds on PYTHONPATH before the role."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(code))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


# A made-up name (.test is reserved for tests, RFC 6761) that resolves to ::1
# first and to 127.0.0.1 second, as localhost does on many systems.
TWO_ADDRESS_NAME = "chat-server.test"
RESOLVE_TWO_ADDRESSES = f"""
    import socket
    _real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == {TWO_ADDRESS_NAME!r}:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", int(port), 0, 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return _real_getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
"""


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")


# --- The files themselves -------------------------------------------------------------

@pytest.mark.points(1)
@pytest.mark.parametrize("module, options", [
    (SERVER, ["--host", "--port", "--name", "--headless", "--env", "--db"]),
    (CLIENT, ["--host", "--port", "--name", "--register", "--headless", "--env"]),
])
def test_help_explains_every_option(module, options):
    env = dict(os.environ)   # the role graded (--role), not the kit's own file
    result = subprocess.run([*role_command(module, env), "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout
    assert "--password" not in result.stdout   # the password never goes on a command line


@pytest.mark.points(1)
@pytest.mark.parametrize("module", [SERVER, CLIENT])
def test_mistyped_port_names_the_flag(module):
    env = dict(os.environ)
    result = subprocess.run([*role_command(module, env), "--port", "abc", "--name", "alice"],
                            cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=DEADLINE_SECONDS)
    assert result.returncode == 2   # argparse's code for a bad command line
    assert "argument --port: invalid int value: 'abc'" in result.stderr
    assert "LAB1_PORT" not in result.stderr


@pytest.mark.points(1)
@pytest.mark.parametrize("module", [SERVER, CLIENT])
def test_parse_args_reads_the_argv_it_is_given(module):
    args = role_module(module).parse_args(["--port", "6001", "--host", "::1", "--name", "alice"])
    assert (args.port, args.host, args.name) == (6001, "::1", "alice")


# --- A chat -------------------------------------------------------------------------------

@pytest.mark.network
@pytest.mark.points(3)
def test_messages_are_delivered_both_ways_verbatim(lab):
    # No DISPLAY and no --headless: the server must choose the terminal by itself.
    server = lab.start_server(headless=False, env={"DISPLAY": None, "WAYLAND_DISPLAY": None})
    server.wait_for_stderr(r"no display.*headless")
    alice = lab.logged_in_client("Alice", "--register")
    alice.send_line("hello server")
    server.wait_for_stdout(r"^alice: hello server$")
    server.send_line("hello alice, ünïcode ✓ and  two spaces ")
    alice.wait_for_stdout(re.escape("server: hello alice, ünïcode ✓ and  two spaces ") + "$")
    alice.send_line("  indented: kept as typed")
    server.wait_for_stdout(r"^alice:   indented: kept as typed$")
    alice.close_stdin()   # end of stdin quits cleanly
    assert alice.wait_exit() == 0
    server.wait_for_stderr(r"^alice left the chat")
    assert transcript(server, "alice") == ["hello server", "  indented: kept as typed"]
    assert transcript(alice, "server") == ["hello alice, ünïcode ✓ and  two spaces "]


@pytest.mark.network
@pytest.mark.points(1)
def test_ctrl_x_byte_sends_the_line_before_it_and_quits(lab):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    alice.send_bytes(b"last words\x18")
    server.wait_for_stdout(r"^alice: last words$")
    assert alice.wait_exit() == 0
    server.wait_for_stderr(r"^alice left the chat \(quit\)$")


@pytest.mark.network
@pytest.mark.points(2)
def test_next_client_can_chat_after_the_first_one_quits(lab):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    alice.send_line("/quit")
    assert alice.wait_exit() == 0
    server.wait_for_stderr(r"^alice left the chat")
    server.wait_for_stderr(r"waiting for a client", count=2)
    alice_again = lab.logged_in_client("alice")   # log in, no --register this time
    alice_again.send_line("back again")
    server.wait_for_stdout(r"^alice: back again$")
    server.send_line("welcome back")
    alice_again.wait_for_stdout(r"^server: welcome back$")


@pytest.mark.network
@pytest.mark.points(2)
def test_client_is_told_when_the_server_quits(lab):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    server.send_line("/quit")
    assert server.wait_exit() == 0
    alice.wait_for_stderr(r"^the server ended the chat: the server is shutting down$")
    assert alice.wait_exit() == 0


@pytest.mark.network
@pytest.mark.points(2)
def test_second_client_is_told_the_server_is_busy_and_the_chat_goes_on(lab):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    bob = lab.start_client("bob", "--register")
    bob.send_line("let me in")
    bob.wait_for_stderr(r"^the server is busy")
    assert bob.wait_exit() == 1
    alice.send_line("still here")
    server.wait_for_stdout(r"^alice: still here$")
    server.send_line("me too")
    alice.wait_for_stdout(r"^server: me too$")
    assert transcript(server, "bob") == []
    assert not any("busy" in line for line in alice.stderr_lines)


# --- Failures, each with a clear reason ------------------------------------------------------

@pytest.mark.network
@pytest.mark.points(2)
def test_wrong_password_is_refused_and_nothing_is_delivered(lab):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    alice.close_stdin()
    assert alice.wait_exit() == 0
    intruder = lab.start_client("alice", password="not the password")
    intruder.send_line("this must not arrive")
    intruder.wait_for_stderr(r"^login failed: unknown name or wrong password$")
    assert intruder.wait_exit() == 1
    server.wait_for_stderr(r"login refused")
    lab.logged_in_client("alice")   # the right password still works
    assert server.stdout_lines == []


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.parametrize("setting", ["CHAT_PSK", "SERVER_PUBLIC_KEY"])
def test_wrong_key_fails_the_handshake_with_a_clear_message(lab, setting):
    server = lab.start_server()
    wrong_key = os.urandom(32).hex() if setting == "CHAT_PSK" else noise.generate_keypair()[1].hex()
    client = lab.start_client("alice", "--register",
                              env_file=lab.client_env_file("wrong.env", **{setting: wrong_key}))
    client.send_line("this must not arrive")
    client.wait_for_stderr("^" + re.escape(HANDSHAKE_MISMATCH) + "$")
    assert client.wait_exit() == 1
    server.wait_for_stderr(r"dropped: handshake failed")
    assert server.stdout_lines == [] and client.stdout_lines == []
    lab.logged_in_client("alice", "--register")   # the server carries on


@pytest.mark.network
@pytest.mark.points(1)
def test_client_without_a_server_says_so_and_fails(lab):
    port = free_port()
    client = lab.start_client("alice", port=port)
    client.wait_for_stderr(rf"^cannot reach the server at 127\.0\.0\.1:{port}: .*refused")
    assert client.wait_exit() == 1


# --- Host names and IPv6 ------------------------------------------------------------------------

@pytest.mark.network
@pytest.mark.points(2)
def test_client_tries_every_address_of_a_host_name(lab, tmp_path):
    """The name resolves to ::1 first, where nobody listens, then to 127.0.0.1."""
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register", host=TWO_ADDRESS_NAME,
                                 env=with_sitecustomize(tmp_path, RESOLVE_TWO_ADDRESSES))
    alice.send_line("found you")
    server.wait_for_stdout(r"^alice: found you$")


@pytest.mark.network
@pytest.mark.points(1)
def test_client_names_every_address_it_tried_when_none_answers(lab, tmp_path):
    port = free_port()
    client = lab.start_client("alice", host=TWO_ADDRESS_NAME, port=port,
                              env=with_sitecustomize(tmp_path, RESOLVE_TWO_ADDRESSES))
    line = client.wait_for_stderr(r"^cannot reach the server at .*").group(0)
    assert line.startswith(f"cannot reach the server at {TWO_ADDRESS_NAME}:{port}: tried [::1]:{port} (")
    assert f"), 127.0.0.1:{port} (Connection refused)" in line
    assert client.wait_exit() == 1


@needs_ipv6
@pytest.mark.network
@pytest.mark.points(1)
def test_server_on_ipv6_loopback_serves_a_client(lab):
    server = lab.start_server(host="::1")
    alice = lab.logged_in_client("alice", "--register", host="::1")
    alice.send_line("over IPv6")
    server.wait_for_stdout(r"^alice: over IPv6$")
    server.wait_for_stderr(r"^alice logged in from \[::1\]:\d+$")


@needs_ipv6
@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="this OS cannot take IPv4 on an IPv6 socket")
def test_server_on_every_address_takes_ipv6_and_ipv4_clients(lab):
    server = lab.start_server(host="::")
    alice = lab.logged_in_client("alice", "--register", host="::1")
    alice.send_line("/quit")
    assert alice.wait_exit() == 0
    bob = lab.logged_in_client("bob", "--register", host="127.0.0.1")
    bob.send_line("over IPv4")
    server.wait_for_stdout(r"^bob: over IPv4$")
    server.wait_for_stderr(r"^bob logged in from \[::ffff:127\.0\.0\.1\]:\d+$")


# --- Strangers: what they cannot do to the server (docs/lab1.md) ----------------------------

@pytest.mark.network
@pytest.mark.points(3)
def test_idle_connections_without_the_key_neither_keep_a_member_out_nor_stay_open(lab):
    server = lab.start_server()
    # A stranger at 127.0.0.2 opens as many connections as one address may hold, then one more.
    idle = [idle_connection(lab, "127.0.0.2") for _ in range(LAB1_LIMITS.strangers_per_address)]
    one_more = idle_connection(lab, "127.0.0.2")
    server.wait_for_stderr(r"^127\.0\.0\.2:\d+ made room for a newer connection$")   # its own oldest
    assert closed_by_the_server(idle[0])
    alice = lab.logged_in_client("alice", "--register")   # from 127.0.0.1, meanwhile
    alice.send_line("nobody holds my seat")
    server.wait_for_stdout(r"^alice: nobody holds my seat$")
    for sock in idle + [one_more]:
        assert closed_by_the_server(sock)
        sock.close()
    server.wait_for_stderr(rf"^127\.0\.0\.2:\d+ did not complete the handshake within "
                           rf"{HANDSHAKE_TIMEOUT_SECONDS} s$", count=LAB1_LIMITS.strangers_per_address)
    server.send_line("still here")
    alice.wait_for_stdout(r"^server: still here$")


@pytest.mark.network
@pytest.mark.points(3)
def test_strangers_holding_connections_from_eight_addresses_do_not_keep_new_chats_out(lab):
    server = lab.start_server()

    def chats(names: list[str]) -> int:
        """Log in as each name in turn, say hello, leave; how many were heard."""
        heard = 0
        for name in names:
            sock, session = logged_in_raw_session(lab, name)
            session.send(ChatMessage(name, "hello"))
            send_queued(sock, session)
            heard += bool(server.wait_for_stdout(rf"^{name}: hello$"))
            sock.close()
            server.wait_for_stderr(rf"^{name} closed the connection$")   # the chat slot is free again
        return heard

    before = chats(["alice", "bob"])
    # 8 connections from each of 8 addresses, never a word: more than all the strangers the server
    # holds (LAB1_LIMITS.strangers), so every place a stranger may have is taken, and reopened.
    flood = [idle_connection(lab, f"127.0.0.{2 + address}") for address in range(8)
             for _ in range(LAB1_LIMITS.strangers_per_address)]
    during = chats(["carol", "dave"])
    for sock in flood:
        sock.close()
    assert before == during == 2


@pytest.mark.network
@pytest.mark.points(2)
def test_a_replayed_first_handshake_record_is_closed_unanswered(lab):
    server = lab.start_server()
    settings = load_settings(lab.client_env, create=False)
    session = SecureSession.client(settings.psk, settings.server_public_key)
    first_record = bytes(session.outgoing)           # sniffed on its way to the server
    honest = idle_connection(lab)
    send_queued(honest, session)
    while not session.established:
        data = honest.recv(65536)
        assert data, "the server closed the honest connection during the handshake"
        session.receive(data)
    replay = idle_connection(lab, "127.0.0.2")
    replay.sendall(first_record)                     # the same record, from elsewhere
    try:
        # Its first bytes, or b"" for a close: a server that answered would hold the
        # connection open for the rest of the handshake's deadline, not worth waiting out.
        answer = replay.recv(65536)
    except ConnectionResetError:
        answer = b""   # closed with unread bytes: a reset is a close too
    replay.close()
    assert answer == b""                             # no handshake record 2: no key exchange was done
    server.wait_for_stderr(r"^127\.0\.0\.2:\d+ dropped: a replayed handshake")
    session.send(Register("alice", PASSWORD))        # the honest client goes on undisturbed
    send_queued(honest, session)
    assert isinstance(receive_until(honest, session, [], LoginAccepted), LoginAccepted)
    honest.close()


@pytest.mark.network
@pytest.mark.points(2)
def test_a_flood_of_strangers_does_not_become_a_flood_of_notes(lab):
    server = lab.start_server()
    for _ in range(200):   # no key: garbage, and gone
        sock = idle_connection(lab, "127.0.0.2")
        sock.sendall(b"\x00\x40" + bytes(64))
        sock.close()
    server.wait_for_stderr(r"^\d+ more notes about connections held back \(at most 10 a second\)$")
    alice = lab.logged_in_client("alice", "--register")   # the chat is not held back
    alice.send_line("hello")
    server.wait_for_stdout(r"^alice: hello$")
    about_strangers = [line for line in server.stderr_lines if line.startswith("127.0.0.2:")]
    assert len(about_strangers) < 100, server.output()


@pytest.mark.network
@pytest.mark.points(2)
def test_a_login_and_close_loop_leaves_no_password_checks_queued_behind_it(lab):
    with open(lab.env_file, "a", encoding="utf-8") as env_file:
        env_file.write("ARGON2_MEMORY_KIB=131072\n")   # a slow hash, so that checks would queue up
    lab.start_server()
    for i in range(3 * LAB1_LIMITS.queued_logins_per_address):   # a key holder at 127.0.0.2: Login, then gone
        sock, session = handshaken_raw_session(lab, "127.0.0.2")
        session.send(Login(f"nobody{i}", PASSWORD))
        send_queued(sock, session)
        sock.close()
    # A closed connection takes its queued check with it: the address's share
    # of the queue is free again, for the next honest login from there.
    sock, session = handshaken_raw_session(lab, "127.0.0.2")
    session.send(Register("alice", PASSWORD))
    send_queued(sock, session)
    received = []
    while not any(isinstance(message, (LoginAccepted, Goodbye)) for message in received):
        data = sock.recv(65536)
        assert data, f"closed without an answer: {received}"
        received += session.receive(data)
    assert isinstance(received[-1], LoginAccepted), received
    sock.close()


@pytest.mark.network
@pytest.mark.points(2)
def test_a_login_finished_while_another_client_chats_is_told_busy_and_a_silent_member_is_dropped(lab):
    server = lab.start_server()
    silent_sock, _session = handshaken_raw_session(lab)    # never logs in
    late_sock, late = handshaken_raw_session(lab)           # logs in once alice chats
    alice = lab.logged_in_client("alice", "--register")
    late.send(Register("bob", PASSWORD))
    send_queued(late_sock, late)
    received = []
    assert receive_until(late_sock, late, received, Goodbye).reason.startswith("the server is busy")
    assert not any(isinstance(message, LoginAccepted) for message in received)
    alice.send_line("undisturbed")
    server.wait_for_stdout(r"^alice: undisturbed$")
    assert closed_by_the_server(silent_sock)
    server.wait_for_stderr(rf"did not log in within {LOGIN_TIMEOUT_SECONDS} s$")
    server.send_line("and you?")
    alice.wait_for_stdout(r"^server: and you\?$")


FLOOD_SOURCES = [f"127.0.0.{number}" for number in range(2, 8)]
LOW_DESCRIPTOR_LIMIT = 24   # the server itself needs about 10; the flood needs many more


@pytest.mark.network
@pytest.mark.points(3)
def test_out_of_file_descriptors_the_server_says_so_once_and_recovers(lab, tmp_path):
    server = lab.start_server(env=with_sitecustomize(tmp_path, f"""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW_DESCRIPTOR_LIMIT}, {LOW_DESCRIPTOR_LIMIT}))
    """))
    flood = [idle_connection(lab, source) for source in FLOOD_SOURCES
             for _ in range(LAB1_LIMITS.strangers_per_address)]
    server.wait_for_stderr(r"^cannot accept connections: Too many open files")
    # The first strangers' handshake deadline passes: seconds under the flood.
    server.wait_for_stderr(r"did not complete the handshake within")
    assert len(server.stderr_lines) < 100   # a spinning accept loop writes a line per attempt
    assert len([line for line in server.stderr_lines if "Too many open files" in line]) <= 2
    for sock in flood:
        sock.close()
    alice = lab.logged_in_client("alice", "--register")
    alice.send_line("made it")
    server.wait_for_stdout(r"^alice: made it$")


@pytest.mark.network
@pytest.mark.points(2)
def test_client_that_stops_reading_is_dropped_once_too_much_is_unsent(lab):
    server = lab.start_server()
    sock, _session = logged_in_raw_session(lab, "mallory")   # and it never reads again
    line = "x" * 1000
    dropped = r"^mallory stopped reading: dropped with \d+ bytes unsent"
    # The kernel's buffers on both ends fill first (a few MB on loopback), then ours.
    for _ in range(20 * MAX_OUTGOING_BYTES // len(line) // 100):
        if any(re.search(dropped, text) for text in list(server.stderr_lines)):
            break
        server.send_bytes(f"{line}\n".encode() * 100)
    server.wait_for_stderr(dropped)
    sock.close()
    alice = lab.logged_in_client("alice", "--register")
    alice.send_line("my turn")
    server.wait_for_stdout(r"^alice: my turn$")


# --- The network cuts the stream anywhere; peers misbehave -----------------------------------

@pytest.mark.network
@pytest.mark.points(3)
def test_records_split_into_bytes_or_merged_arrive_whole_and_in_order(lab):
    server = lab.start_server()
    proxy = ChunkingProxy(lab.port)
    try:
        alice = lab.logged_in_client("alice", "--register", port=proxy.port)
        upstream = [f"up {number} " + "x" * number for number in range(40)]
        downstream = [f"down {number} " + "y" * (40 - number) for number in range(40)]
        alice.send_bytes("".join(line + "\n" for line in upstream).encode())
        server.send_bytes("".join(line + "\n" for line in downstream).encode())
        server.wait_until(lambda: len(transcript(server, "alice")) >= 40, "40 lines from alice")
        alice.wait_until(lambda: len(transcript(alice, "server")) >= 40, "40 lines from the server")
        assert transcript(server, "alice") == upstream
        assert transcript(alice, "server") == downstream
        assert proxy.split_records > 0 and proxy.merged_sends > 0
    finally:
        proxy.close()


@pytest.mark.network
@pytest.mark.points(2)
def test_client_vanishing_mid_record_does_not_stop_the_server(lab):
    server = lab.start_server()
    sock, session = logged_in_raw_session(lab, "mallory")
    session.send(ChatMessage("mallory", "cut short"))
    sock.sendall(session.outgoing[:len(session.outgoing) // 2])
    sock.close()
    server.wait_for_stderr(r"^mallory closed the connection in the middle of a record$")
    alice = lab.logged_in_client("alice", "--register")
    alice.send_line("is anyone there?")
    server.wait_for_stdout(r"^alice: is anyone there\?$")
    assert transcript(server, "mallory") == []


@pytest.mark.network
@pytest.mark.points(2)
def test_server_shows_the_logged_in_name_not_the_one_a_message_claims(lab):
    server = lab.start_server()
    sock, session = logged_in_raw_session(lab, "mallory")
    session.send(ChatMessage("server", "I am the server"))   # a claim the server must not believe
    sock.sendall(session.outgoing)
    session.outgoing.clear()
    server.wait_for_stdout(r": I am the server$")
    assert transcript(server, "mallory") == ["I am the server"], server.output()
    sock.close()


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.parametrize("garbage", [b"\xff\xff" + b"x" * 40, b"\x00\x30" + bytes(range(48))],
                         ids=["oversize-length", "bad-handshake"])
def test_garbage_never_stops_the_server_nor_the_chat(lab, garbage):
    server = lab.start_server()
    for round_number in (1, 2):   # first with nobody chatting, then during a chat
        with socket.create_connection(("127.0.0.1", lab.port), timeout=DEADLINE_SECONDS) as sock:
            sock.sendall(garbage)
            assert sock.recv(100) == b""   # the server hangs up, without a word
        server.wait_for_stderr(r"dropped: ", count=round_number)
        if round_number == 1:
            alice = lab.logged_in_client("alice", "--register")
    alice.send_line("unharmed")
    server.wait_for_stdout(r"^alice: unharmed$")


# --- The window, under a virtual X server ----------------------------------------------------

@pytest.mark.gui
@pytest.mark.network
@pytest.mark.points(3)
def test_windows_send_on_enter_and_close_on_ctrl_x(lab, xvfb_display):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    on_display = {"DISPLAY": xvfb_display}
    server = lab.start_server(headless=False, env=on_display)
    alice = lab.logged_in_client("alice", "--register", headless=False, env=on_display)
    window = type_into_window(xvfb_display, "Lab 1 client: alice", "hello from a window")
    # Both windows print their transcript on stdout too: that is how we see it.
    server.wait_for_stdout(r"^alice: hello from a window$")
    server_window = type_into_window(xvfb_display, "Lab 1 server: server", "hello back")
    alice.wait_for_stdout(r"^server: hello back$")
    xdotool(xvfb_display, "windowfocus", "--sync", window)
    xdotool(xvfb_display, "key", "ctrl+x")
    assert alice.wait_exit() == 0
    server.wait_for_stderr(r"^alice left the chat \(quit\)$")
    xdotool(xvfb_display, "windowfocus", "--sync", server_window)
    xdotool(xvfb_display, "key", "ctrl+x")
    assert server.wait_exit() == 0


@pytest.mark.points(1)
@pytest.mark.parametrize("problem", ["missing folder", "not a database"])
def test_lab1_server_that_cannot_open_its_database_says_which_file_and_why(lab, problem):
    database, reason = unopenable_database(lab.tmp_path, problem)
    server = lab.processes.start(SERVER, "--port", "0", "--env", str(lab.env_file), "--db", str(database),
                                 "--headless")
    assert server.wait_exit() == 1, server.output()
    assert len(server.stderr_lines) == 1, server.output()   # one line, no traceback
    assert str(database) in server.stderr_lines[0] and reason in server.stderr_lines[0], server.output()


@pytest.mark.network
@pytest.mark.points(1)
def test_a_genuine_line_read_together_with_a_tampered_record_is_shown_then_the_peer_is_dropped(lab):
    server = lab.start_server()
    sock, session = logged_in_raw_session(lab, "mallory")
    session.send(ChatMessage("mallory", "genuine, then a bad record"))
    session.send(ChatMessage("mallory", "tampered"))
    chunk = bytearray(session.outgoing)
    chunk[-1] ^= 1                       # the second record's tag
    sock.sendall(chunk)                  # one send: the server reads both at once
    server.wait_for_stdout(r"^mallory: genuine, then a bad record$")
    server.wait_for_stderr(r"^mallory dropped: ")
    assert not any("tampered" in line for line in server.stdout_lines)
    sock.close()
