"""Every way of quitting ends a role the same way: "/quit", Ctrl-C (SIGINT)
and SIGTERM. The peer is told goodbye, the exit code is the same, and there
is no traceback. Each test runs once per way of quitting, with the same
assertions, so a signal must do exactly what /quit does.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from common import net
from tests.procs import DEADLINE_SECONDS, ROOT, Processes, RoleProcess, create_test_env_file
from tests.test_lab1 import lab, with_sitecustomize  # noqa: F401  (a fixture)
from tests.test_lab2 import Room, free_udp_port, room  # noqa: F401  (a fixture)
from tests.xvfb import xdotool, xvfb_display  # noqa: F401  (a fixture)

WAYS_TO_QUIT = ["/quit", "SIGINT", "SIGTERM"]


def quit_by(process: RoleProcess, way: str) -> None:
    if way == "/quit":
        process.send_line("/quit")
    else:
        process.process.send_signal(getattr(signal, way))


def assert_no_traceback(*processes: RoleProcess) -> None:
    for process in processes:
        assert not any("Traceback" in line for line in process.stderr_lines), process.output()


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", WAYS_TO_QUIT)
def test_lab1_client_quit_tells_the_server_it_left(lab, way):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    quit_by(alice, way)
    assert alice.wait_exit() == 0, alice.output()
    server.wait_for_stderr(r"^alice left the chat \(quit\)$")
    server.wait_for_stderr(r"waiting for a client", count=2)
    assert_no_traceback(alice, server)


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", WAYS_TO_QUIT)
def test_lab1_server_quit_tells_the_client_the_chat_ended(lab, way):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    server.wait_for_stderr(r"^alice logged in from")
    quit_by(server, way)
    assert server.wait_exit() == 0, server.output()
    assert alice.wait_exit() == 0, alice.output()
    assert alice.stderr_lines[-1] == "the server ended the chat: the server is shutting down"
    assert "alice disconnected: we are shutting down" in server.stderr_lines
    assert_no_traceback(alice, server)


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", WAYS_TO_QUIT)
def test_lab2_client_quit_is_seen_as_a_leave_and_ends_with_its_hash(room, way):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    bob.wait_for_stdout(r"^#2 \* bob joined$")
    quit_by(alice, way)
    assert alice.wait_exit() == 0, alice.output()
    assert alice.stderr_lines[-1].startswith("transcript "), alice.output()
    for screen in (server, bob):
        screen.wait_for_stdout(r"^#3 \* alice left$")
    assert_no_traceback(alice, bob, server)


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", WAYS_TO_QUIT)
def test_lab2_server_quit_says_goodbye_to_every_client(room, way):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    server.wait_for_stdout(r"^#2 \* bob joined$")
    quit_by(server, way)
    assert server.wait_exit() == 0, server.output()
    assert server.stderr_lines[-1].startswith("transcript "), server.output()
    for client in (alice, bob):
        assert client.wait_exit() == 0, client.output()
        assert "the server said goodbye: the server is shutting down" in client.stderr_lines
        assert client.stderr_lines[-1].startswith("transcript "), client.output()
    assert_no_traceback(alice, bob, server)


@pytest.mark.gui
@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", ["SIGINT", "SIGTERM"])
def test_lab2_window_quits_on_a_signal_as_on_ctrl_x(tmp_path, xvfb_display, way):
    with Processes(base_env={"DISPLAY": xvfb_display}) as processes:
        window_room = Room(tmp_path, processes)
        server = window_room.start_server()
        alice = window_room.join("alice", headless=False)
        assert not any("headless" in line for line in alice.stderr_lines), alice.output()
        quit_by(alice, way)
        assert alice.wait_exit() == 0, alice.output()
        assert alice.stderr_lines[-1].startswith("transcript "), alice.output()
        server.wait_for_stdout(r"^#2 \* alice left$")
        assert_no_traceback(alice, server)


@pytest.mark.gui
@pytest.mark.network
@pytest.mark.points(1)
def test_lab2_window_on_a_mac_quits_on_cmd_q_with_its_goodbye(tmp_path, xvfb_display):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    # macOS's habits, set in the client's common/ui.py before it opens its window (the
    # server runs headless, where they change nothing). X11 has no Command key: Tk
    # takes Command for Mod1, the Alt key, so alt+q plays Cmd-Q here.
    mac = with_sitecustomize(tmp_path, "import common.ui\ncommon.ui.PLATFORM = 'darwin'\n")
    with Processes(base_env={"DISPLAY": xvfb_display, **mac}) as processes:
        window_room = Room(tmp_path, processes)
        server = window_room.start_server()
        alice = window_room.join("alice", headless=False)
        window = xdotool(xvfb_display, "search", "--sync", "--onlyvisible", "--name", "^Lab 2 room: alice$").split()[0]
        xdotool(xvfb_display, "windowfocus", "--sync", window)
        xdotool(xvfb_display, "key", "alt+q")
        assert alice.wait_exit() == 0, alice.output()
        assert alice.stderr_lines[-1].startswith("transcript "), alice.output()
        server.wait_for_stdout(r"^#2 \* alice left$")
        assert_no_traceback(alice, server)


@pytest.mark.points(1)
@pytest.mark.parametrize("module", ["lab1_tcp.client", "lab2_udp.client"])
@pytest.mark.parametrize("way", ["SIGINT", "SIGTERM", "SIGINT, started with it ignored"])
def test_interrupt_at_the_password_prompt_ends_in_one_line(tmp_path, module, way):
    # A program started by a script's `cmd &` inherits SIGINT ignored, and Python leaves it so.
    prefix = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"] if way.endswith("ignored") else []
    if prefix and shutil.which("sh") is None:
        pytest.skip("needs a POSIX shell to start a program with SIGINT ignored")
    env_file = create_test_env_file(tmp_path / ".env")
    env = {key: value for key, value in os.environ.items()
           if key not in ("CHAT_PASSWORD", "DISPLAY", "WAYLAND_DISPLAY")}
    # A new session has no terminal: getpass then prompts on stderr and reads
    # stdin, where the test can see the prompt.
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", module, "--name", "alice", "--headless", "--env", str(env_file),
         "--port", "1"], cwd=ROOT, env=env, start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = b""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while b"Password for alice: " not in seen:
            ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(process.stderr.fileno(), 4096) if ready else b""
            assert chunk, f"no password prompt: {seen!r}"
            seen += chunk
        process.send_signal(getattr(signal, way.split(",")[0]))
        _, rest = process.communicate(timeout=DEADLINE_SECONDS)
    finally:
        process.kill()
        process.wait()
    stderr = (seen + rest).decode()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == "no password given", stderr


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", ["SIGINT", "SIGTERM"])
def test_lossy_relay_prints_what_it_did_when_stopped(way):
    listen_port = free_udp_port()
    with net.broadcast_receiver(free_udp_port()) as clients, Processes() as processes:
        clients.setblocking(True)
        relay = processes.start("lab2_udp.lossy_relay", "--listen-port", str(listen_port),
                                "--forward-port", str(clients.getsockname()[1]),
                                "--drop", "0", "--duplicate", "0", "--reorder", "0")
        relay.wait_for_stderr(r"^relaying ")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.sendto(b"one datagram", ("127.0.0.1", listen_port))
        clients.settimeout(DEADLINE_SECONDS)
        heard = clients.recv(100)
        while heard.startswith(net.PROBE_PREFIX):   # the relay tried how to reach the clients at start
            heard = clients.recv(100)
        assert heard == b"one datagram"
        quit_by(relay, way)
        assert relay.wait_exit() == 0, relay.output()
    assert relay.stderr_lines[-1] == "received 1, dropped 0, duplicated 0, reordered 0", relay.output()
    assert_no_traceback(relay)


@pytest.mark.gui
@pytest.mark.points(1)
@pytest.mark.parametrize("module", ["lab1_tcp.client", "lab2_udp.client"])
def test_interrupt_at_the_password_dialog_ends_in_one_line(tmp_path, xvfb_display, module):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    env_file = create_test_env_file(tmp_path / ".env")
    with Processes(base_env={"DISPLAY": xvfb_display}) as processes:
        client = processes.start(module, "--name", "alice", "--env", str(env_file), "--port", "1")
        xdotool(xvfb_display, "search", "--sync", "--onlyvisible", "--name", ": password$")
        quit_by(client, "SIGINT")
        assert client.wait_exit() == 1, client.output()
    assert client.stderr_lines[-1] == "no password given", client.output()
    assert_no_traceback(client)


@pytest.mark.gui
@pytest.mark.points(1)
@pytest.mark.parametrize("module", ["lab1_tcp.client", "lab2_udp.client"])
def test_ctrl_x_at_the_password_dialog_ends_in_one_line(tmp_path, xvfb_display, module):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    env_file = create_test_env_file(tmp_path / ".env")
    with Processes(base_env={"DISPLAY": xvfb_display}) as processes:
        client = processes.start(module, "--name", "alice", "--env", str(env_file), "--port", "1")
        xdotool(xvfb_display, "search", "--sync", "--onlyvisible",
                "--name", ": password$", "windowfocus", "--sync", "%1")
        xdotool(xvfb_display, "key", "ctrl+x")   # at the focus, as the user types it
        assert client.wait_exit() == 1, client.output()
    assert client.stderr_lines[-1] == "no password given", client.output()   # and nothing sent: no server
    assert not any("internal error" in line for line in client.stderr_lines), client.output()
    assert_no_traceback(client)


# --- stdin of every kind: read by a thread, on every system (common/ui.py, StdinReader) ---

def run_with_stdin(kind: str, tmp_path):
    """What Processes.start needs for a stdin of ``kind``: (stdin, prefix)."""
    if kind == "/dev/null":
        return subprocess.DEVNULL, None
    if kind == "a file":
        path = tmp_path / "typed.txt"
        path.write_bytes(b"from a file\n")
        return open(path, "rb"), None   # closed by the caller once the process has it
    # A closed descriptor 0: Python then starts with sys.stdin None.
    return subprocess.DEVNULL, ["sh", "-c", 'exec "$@" 0<&-', "sh"]


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("kind", ["/dev/null", "a file", "a closed descriptor"])
def test_lab1_client_with_any_stdin_logs_in_then_leaves_at_its_end(lab, tmp_path, kind):
    if kind == "a closed descriptor" and shutil.which("sh") is None:
        pytest.skip("needs a POSIX shell to close descriptor 0")
    server = lab.start_server()
    stdin, prefix = run_with_stdin(kind, tmp_path)
    alice = lab.processes.start(
        "lab1_tcp.client", "--host", lab.host, "--port", str(lab.port), "--name", "alice", "--register",
        "--env", str(lab.client_env), "--headless", env={"CHAT_PASSWORD": "correct horse battery"},
        stdin=stdin, prefix=prefix)
    if kind == "a file":
        stdin.close()
    # Its lines (none, or the file's one) waited for the login, then its end quit as /quit does.
    assert alice.wait_exit() == 0, alice.output()
    server.wait_for_stderr(r"^alice logged in from")
    server.wait_for_stderr(r"^alice left the chat \(quit\)$")
    if kind == "a file":   # its stdout is read apart from its stderr: that line may be read after the leave
        server.wait_for_stdout(r"^alice: from a file$")
    assert server.stdout_lines == (["alice: from a file"] if kind == "a file" else []), server.output()
    assert_no_traceback(alice, server)


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("lab_number", [1, 2])
def test_password_from_a_pipe_is_its_first_line_and_the_lines_after_it_are_chat(lab, room, lab_number):
    # No CHAT_PASSWORD and a pipe: the password and the first message come in one write,
    # as a script would send them; reading the password must not swallow the message.
    if lab_number == 1:
        server = lab.start_server()
        alice = lab.start_client("alice", "--register", env={"CHAT_PASSWORD": None})
        expected = r"^alice: said after the password$"
    else:
        server = room.start_server()
        alice = room.start_client("alice", env={"CHAT_PASSWORD": None})
        expected = r"^#2 alice: said after the password$"
    alice.send_bytes(b"correct horse battery\nsaid after the password\n")
    server.wait_for_stdout(expected)
    alice.send_line("/quit")
    assert alice.wait_exit() == 0, alice.output()
    assert alice.stderr_lines[0].startswith("Password for alice: "), alice.output()
    assert_no_traceback(alice, server)
