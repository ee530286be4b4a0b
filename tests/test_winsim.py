"""The roles under a simulation of Windows' sockets (tests/winsim/sitecustomize.py).

Windows' select() takes sockets only, and names its errors with Winsock's
numbers. The simulation gives a Linux process those habits; here a chosen
handful of the black-box tests of both labs, the quit paths and the demo run
with every role under it, and two checks prove that it bites: what Windows
refuses, it refuses. The whole of tests/test_lab1.py, tests/test_lab2.py and
tests/test_quit_paths.py runs under it too with CHAT_LAB_SIMULATE=windows set
for the run (docs/grading.md); kept to a handful here, so the suite stays fast.
"""
from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import sys

import pytest

from tests import test_lab1, test_lab2, test_quit_paths
from tests.procs import DEADLINE_SECONDS, ROOT, SIMULATION_VARIABLE, Processes, simulation_environment
from tests.test_lab1 import Lab
from tests.test_lab2 import Room
from tests.winsim.sitecustomize import WSAEINVAL, WSAENOTSOCK, WindowsSelectSelector

WINDOWS = {SIMULATION_VARIABLE: "windows"}


@pytest.fixture
def lab(tmp_path):
    with Processes(base_env=WINDOWS) as processes:
        yield Lab(tmp_path, processes)


@pytest.fixture
def room(tmp_path):
    with Processes(base_env=WINDOWS) as processes:
        yield Room(tmp_path, processes)


def run_simulated(code: str, stdin=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python process under the simulation."""
    env = simulation_environment({**os.environ, **WINDOWS})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=stdin,
                          capture_output=True, text=True, timeout=DEADLINE_SECONDS)


# --- The simulation bites ---------------------------------------------------------------------

@pytest.mark.points(1)
def test_the_simulated_select_takes_sockets_only_and_at_least_one():
    read_end, write_end = os.pipe()
    a, b = socket.socketpair()
    try:
        with WindowsSelectSelector() as selector:
            with pytest.raises(OSError) as nothing:
                selector.select(0)
            assert nothing.value.errno == WSAEINVAL
            selector.register(a, selectors.EVENT_READ)
            b.send(b"x")
            assert [key.fileobj for key, _ in selector.select(0)] == [a]
            selector.register(read_end, selectors.EVENT_READ)   # stdin as ui.py once watched it
            with pytest.raises(OSError) as pipe:
                selector.select(0)
            assert pipe.value.errno == WSAENOTSOCK
    finally:
        os.close(read_end)
        os.close(write_end)
        a.close()
        b.close()


@pytest.mark.points(1)
def test_a_role_process_under_the_simulation_cannot_watch_stdin_nor_reuse_ports():
    # What common/ui.py once did, in a process under the simulation: it fails there as on Windows.
    result = run_simulated(
        "import selectors, socket, sys, errno\n"
        "print(hasattr(socket, 'SO_REUSEPORT'), errno.ECONNREFUSED, socket.errorTab[10061])\n"
        "selector = selectors.DefaultSelector()\n"
        "selector.register(sys.stdin, selectors.EVENT_READ)\n"
        "selector.select(0)\n")
    assert result.stdout.splitlines() == ["False 10061 Connection refused."], result.stderr
    assert "OSError: [Errno 10038]" in result.stderr
    # The same, natively: the pipe is watched without complaint.
    native = subprocess.run([sys.executable, "-c", "import selectors, sys\nselector = selectors.DefaultSelector()\n"
                             "selector.register(sys.stdin, selectors.EVENT_READ)\nselector.select(0)\n"],
                            cwd=ROOT, stdin=subprocess.PIPE, capture_output=True, text=True,
                            timeout=DEADLINE_SECONDS)
    assert native.returncode == 0, native.stderr


# --- Lab 1 under the simulation ---------------------------------------------------------------

@pytest.mark.network
@pytest.mark.points(1)
def test_lab1_chat_and_the_end_of_stdin_under_windows_simulation(lab):
    test_lab1.test_messages_are_delivered_both_ways_verbatim(lab)


@pytest.mark.network
@pytest.mark.points(1)
def test_lab1_ctrl_x_quits_under_windows_simulation(lab):
    test_lab1.test_ctrl_x_byte_sends_the_line_before_it_and_quits(lab)


@pytest.mark.network
@pytest.mark.points(1)
def test_lab1_refused_connect_is_named_in_words_under_windows_simulation(lab):
    # SO_ERROR says 10061 here: os.strerror would call it "Unknown error".
    test_lab1.test_client_without_a_server_says_so_and_fails(lab)


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", ["/quit", "SIGINT"])
def test_lab1_quit_paths_under_windows_simulation(lab, way):
    test_quit_paths.test_lab1_client_quit_tells_the_server_it_left(lab, way)


@pytest.mark.network
@pytest.mark.points(1)
def test_lab1_client_with_stdin_at_its_end_under_windows_simulation(lab, tmp_path):
    test_quit_paths.test_lab1_client_with_any_stdin_logs_in_then_leaves_at_its_end(lab, tmp_path, "/dev/null")


# --- Lab 2 under the simulation ---------------------------------------------------------------

@pytest.mark.network
@pytest.mark.points(1)
def test_lab2_lines_piped_before_the_login_under_windows_simulation(room):
    test_lab2.test_lines_piped_in_before_the_login_are_sent_not_lost(room)


@pytest.mark.network
@pytest.mark.points(1)
def test_lab2_password_from_a_pipe_under_windows_simulation(lab, room):
    test_quit_paths.test_password_from_a_pipe_is_its_first_line_and_the_lines_after_it_are_chat(lab, room, 2)


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("way", ["SIGTERM"])
def test_lab2_server_quit_under_windows_simulation(room, way):
    test_quit_paths.test_lab2_server_quit_says_goodbye_to_every_client(room, way)


@pytest.mark.network
@pytest.mark.points(1)
def test_lab2_oversize_datagram_is_rejected_not_raised_under_windows_simulation(room):
    server = room.start_server()
    alice = room.join("alice")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        # Windows would refuse a datagram longer than the buffer with WSAEMSGSIZE.
        stranger.sendto(bytes(3000), ("127.0.0.1", room.client_broadcast_port))
    server.send_line("after the big one")
    alice.wait_for_stdout(r"^#2 server: after the big one$")
    alice.send_line("/quit")
    assert alice.wait_exit() == 0, alice.output()
    counts = re.search(r"datagrams: (\d+) opened, (\d+) rejected", "\n".join(alice.stderr_lines))
    assert counts and int(counts.group(2)) >= 1, alice.output()
    assert not any("internal error" in line or "Traceback" in line for line in alice.stderr_lines), alice.output()


@pytest.mark.network
@pytest.mark.points(1)
def test_lab2_demo_plays_to_the_same_screens_under_windows_simulation():
    env = simulation_environment({**os.environ, **WINDOWS, "DISPLAY": ""})
    result = subprocess.run([sys.executable, "-m", "lab2_udp.demo"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Every screen shows the same room transcript." in result.stdout
