"""Lab 1 through its command-line contract: the real role scripts, run as
processes, talking over loopback (docs/lab1.md lists the contract).

Every process is killed at teardown, pass or fail; every wait has a deadline.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from common import noise
from common.messages import ChatMessage, LoginAccepted
from common.session import SecureSession
from tests.procs import DEADLINE_SECONDS, ROOT, Processes, RoleProcess, create_test_env_file
from tests.raw_peer import receive_until, register_raw
from tests.tcp_proxy import ChunkingProxy
from tests.xvfb import type_into_window, xdotool, xvfb_display  # noqa: F401  (a fixture)

SERVER, CLIENT = "lab1_tcp.server", "lab1_tcp.client"
PASSWORD = "correct horse battery"
HANDSHAKE_MISMATCH = ("the server closed the connection during the handshake: the pre-shared "
                      "key or the server's public key does not match")


class Lab:
    """One server's env file and database, and helpers to start the roles."""

    def __init__(self, tmp_path, processes: Processes) -> None:
        self.tmp_path = tmp_path
        self.processes = processes
        self.env_file = create_test_env_file(tmp_path / "server.env")
        self.client_env = self.client_env_file("client.env")
        self.port = 0

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

    def start_server(self, *args: str, headless: bool = True, env=None) -> RoleProcess:
        server = self.processes.start(
            SERVER, "--host", "127.0.0.1", "--port", "0", "--env", str(self.env_file),
            "--db", str(self.tmp_path / "chat.db"), *(["--headless"] if headless else []), *args,
            env=env)
        self.port = int(server.wait_for_stderr(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        return server

    def start_client(self, name: str, *args: str, password: str = PASSWORD, env_file=None,
                     port: int | None = None, headless: bool = True, env=None) -> RoleProcess:
        return self.processes.start(
            CLIENT, "--host", "127.0.0.1", "--port", str(port or self.port), "--name", name,
            "--env", str(env_file or self.client_env), *(["--headless"] if headless else []),
            *args, env={"CHAT_PASSWORD": password, **(env or {})})

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


def logged_in_raw_session(lab: Lab, name: str) -> tuple[socket.socket, SecureSession]:
    """Connect and log in from inside the test, to misbehave afterwards."""
    sock, session, received = register_raw(lab.port, lab.client_env, name, PASSWORD)
    receive_until(sock, session, received, LoginAccepted)
    return sock, session


# --- The files themselves -------------------------------------------------------------

@pytest.mark.points(1)
@pytest.mark.parametrize("module, options", [
    (SERVER, ["--host", "--port", "--name", "--headless", "--env", "--db"]),
    (CLIENT, ["--host", "--port", "--name", "--register", "--headless", "--env"]),
])
def test_help_explains_every_option(module, options):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert result.returncode == 0
    for option in options:
        assert option in result.stdout
    assert "--password" not in result.stdout   # the password never goes on a command line


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
