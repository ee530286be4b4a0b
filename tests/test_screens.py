"""A role's screen is one of its outputs, not its life (common/ui.py, write_line).

stdout piped into a program that has exited (``| head -1``), a full disk behind
a redirect (/dev/full), a terminal that cannot show every character: the role
says so once on stderr, and the chat or the room goes on as if nothing happened.
"""
from __future__ import annotations

import os
import select

import pytest

from common.ui import SCREEN_GONE
from tests.procs import DEADLINE_SECONDS
from tests.test_lab1 import lab  # noqa: F401  (a fixture)
from tests.test_lab2 import hash_at, room  # noqa: F401  (a fixture)

pytestmark = pytest.mark.network

PIPE_CLOSED_EARLY = "a pipe closed early"
FULL_DISK = "/dev/full"
SCREEN_KINDS = [PIPE_CLOSED_EARLY, pytest.param(FULL_DISK, marks=pytest.mark.linux_only("/dev/full"))]
EXIT_MESSAGES = ("Traceback", "Exception ignored", "internal error")


class BadScreen:
    """A stdout for a role that fails: a pipe whose reader reads one line and
    goes (as ``head -1`` does), or /dev/full, where every write fails."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == FULL_DISK:
            self.stdout = os.open(FULL_DISK, os.O_WRONLY)
            self.read_end = None
        else:
            self.read_end, self.stdout = os.pipe()

    def started(self) -> None:
        """The role has its copy of the descriptor: drop ours."""
        os.close(self.stdout)

    def read_a_line_and_go(self) -> str:
        """Read the role's first line, then close the pipe; "" for /dev/full."""
        if self.read_end is None:
            return ""
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.read_end], [], [], DEADLINE_SECONDS)
            chunk = os.read(self.read_end, 1) if ready else b""
            assert chunk, f"no line on the role's stdout: {line!r}"
            line += chunk
        os.close(self.read_end)
        self.read_end = None
        return line.decode().rstrip("\n")


def screen_gone_note(reason: str) -> str:
    return "^" + SCREEN_GONE.format(stream="stdout", reason=reason).replace("(", r"\(").replace(")", r"\)")


def assert_clean(process) -> None:
    assert not any(message in line for line in process.stderr_lines for message in EXIT_MESSAGES), \
        process.output()


@pytest.mark.points(1)
@pytest.mark.parametrize("kind", SCREEN_KINDS)
def test_lab1_roles_whose_stdout_fails_keep_chatting(lab, kind):
    server_screen, client_screen = BadScreen(kind), BadScreen(kind)
    server = lab.start_server(stdout=server_screen.stdout)
    server_screen.started()
    alice = lab.start_client("alice", "--register", stdout=client_screen.stdout)
    client_screen.started()
    alice.wait_for_stderr(r"^logged in as alice$")
    alice.send_line("first")
    reason = "Broken pipe" if kind == PIPE_CLOSED_EARLY else "No space left on device"
    if kind == PIPE_CLOSED_EARLY:   # each shows its line, and its reader goes
        assert server_screen.read_a_line_and_go() == "alice: first" == client_screen.read_a_line_and_go()
    alice.send_line("second")   # the server's screen fails here (or failed already): it keeps alice
    server.wait_for_stderr(screen_gone_note(reason))
    server.send_line("from the server")   # alice's screen fails here (or did): she stays
    alice.wait_for_stderr(screen_gone_note(reason))
    alice.send_line("still here")
    server.send_line("/quit")
    assert server.wait_exit() == 0, server.output()
    assert alice.wait_exit() == 0, alice.output()
    assert "alice left the chat (quit)" not in server.stderr_lines
    assert not any("connection lost" in line for line in server.stderr_lines + alice.stderr_lines)
    assert alice.stderr_lines[-1] == "the server ended the chat: the server is shutting down", alice.output()
    for process in (server, alice):
        assert sum("cannot be written" in line for line in process.stderr_lines) == 1, process.output()
        assert_clean(process)


@pytest.mark.points(1)
@pytest.mark.parametrize("kind", SCREEN_KINDS)
def test_lab2_server_whose_stdout_fails_keeps_the_room_and_rekeys_after_a_leave(room, kind):
    screen = BadScreen(kind)
    server = room.start_server(stdout=screen.stdout)
    screen.started()
    alice = room.join("alice")
    if kind == PIPE_CLOSED_EARLY:
        assert screen.read_a_line_and_go() == "#1 * alice joined"
    bob = room.join("bob")   # the server's screen fails here (or failed already)
    server.wait_for_stderr(screen_gone_note("Broken pipe" if kind == PIPE_CLOSED_EARLY else "No space left on device"))
    bob.send_line("/quit")   # the room gets a new key, which only alice is sent
    assert bob.wait_exit() == 0, bob.output()
    alice.wait_for_stdout(r"^#3 \* bob left$")
    carol = room.join("carol")   # she can open the room only with the key sent after the leave
    alice.wait_for_stdout(r"^#4 \* carol joined$")
    alice.send_line("to the room after the leave")
    carol.wait_for_stdout(r"^#5 alice: to the room after the leave$")
    server.send_line("/quit")
    assert server.wait_exit() == 0, server.output()
    assert sum("cannot be written" in line for line in server.stderr_lines) == 1, server.output()
    assert_clean(server)


@pytest.mark.points(1)
def test_lab1_server_on_a_terminal_that_is_not_utf8_shows_every_line(lab):
    server = lab.start_server(env={"PYTHONIOENCODING": "ascii"})
    alice = lab.logged_in_client("alice", "--register")
    for line in ("4 € 5", "after it"):
        alice.send_line(line)
    server.wait_for_stdout(r"^alice: after it$")
    server.send_line("/quit")
    assert server.wait_exit() == 0, server.output()
    assert server.stdout_lines == ["alice: 4 ? 5", "alice: after it"], server.output()
    assert_clean(server)


@pytest.mark.points(1)
def test_lab2_member_on_a_terminal_that_is_not_utf8_shows_every_event_and_hashes_the_real_text(room):
    room.start_server()
    alice = room.join("alice", env={"PYTHONIOENCODING": "ascii"})
    bob = room.join("bob")
    for line in ("4 € 5", "after it"):
        bob.send_line(line)
    assert hash_at(alice, 4) == hash_at(bob, 4)
    assert [line for line in alice.stdout_lines if line.startswith("#")] == [
        "#1 * alice joined", "#2 * bob joined", "#3 bob: 4 ? 5", "#4 bob: after it"], alice.output()
    assert_clean(alice)
