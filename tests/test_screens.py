"""A role's screen is one of its outputs, not its life (common/ui.py, write_line).

stdout piped into a program that has exited (``| head -1``), a full disk behind
a redirect (/dev/full), a terminal that cannot show every character: the role
says so once on stderr, and the chat or the room goes on as if nothing happened.
"""
from __future__ import annotations

import os
import select
import subprocess

import pytest

from common.ui import SCREEN_GONE
from tests.procs import DEADLINE_SECONDS
from tests.test_lab1 import lab  # noqa: F401  (a fixture)
from tests.test_lab2 import hash_at, room  # noqa: F401  (a fixture)

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
