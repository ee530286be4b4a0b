"""Lab 2's windows under a virtual X server: the server and three clients,
typed into with xdotool as a person would type.

A window prints its transcript on stdout too (docs/lab2.md), so the test
reads stdout to see what every window shows. Every wait has a deadline.
"""
from __future__ import annotations

import shutil

import pytest

from common.messages import MAX_TEXT_BYTES
from tests.procs import Processes
from tests.test_lab2 import Room
from tests.xvfb import type_into_window, xdotool, xvfb_display  # noqa: F401  (a fixture)


@pytest.fixture
def room(tmp_path, xvfb_display):
    """A Room whose server and clients open their windows on the Xvfb display."""
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    with Processes(base_env={"DISPLAY": xvfb_display}) as processes:
        yield Room(tmp_path, processes)


@pytest.mark.gui
@pytest.mark.network
@pytest.mark.points(3)
def test_room_windows_send_on_enter_and_a_client_leaves_on_ctrl_x(room, xvfb_display):
    server = room.start_server(headless=False)
    alice, bob, carol = [room.join(name, headless=False) for name in ("alice", "bob", "carol")]
    screens = [server, alice, bob, carol]
    alice_window = type_into_window(xvfb_display, "Lab 2 room: alice", "hello from a window")
    for screen in screens:   # three joins came first: #1 to #3
        screen.wait_for_stdout(r"^#4 alice: hello from a window$")
    type_into_window(xvfb_display, "Lab 2 room: server", "hello back")
    for screen in screens:
        screen.wait_for_stdout(r"^#5 server: hello back$")
    xdotool(xvfb_display, "windowfocus", "--sync", alice_window)
    xdotool(xvfb_display, "key", "ctrl+x")
    assert alice.wait_exit() == 0
    for screen in (server, bob, carol):
        screen.wait_for_stdout(r"^#6 \* alice left$")


@pytest.mark.gui
@pytest.mark.network
@pytest.mark.points(2)
def test_window_keeps_a_refused_line_selected_for_the_user_to_fix(room, xvfb_display):
    server = room.start_server()
    alice = room.join("alice", headless=False)
    too_long = "y" * (MAX_TEXT_BYTES + 1)
    window = type_into_window(xvfb_display, "Lab 2 room: alice", too_long)
    alice.wait_for_stderr(rf"^not sent: a message is at most {MAX_TEXT_BYTES} bytes")
    # The line is still in the entry box: Enter again refuses it again.
    xdotool(xvfb_display, "key", "Return")
    alice.wait_for_stderr(rf"^not sent: a message is at most {MAX_TEXT_BYTES} bytes", count=2)
    # And it is selected: typing replaces it.
    xdotool(xvfb_display, "windowfocus", "--sync", window)
    xdotool(xvfb_display, "type", "short")
    xdotool(xvfb_display, "key", "Return")
    for screen in (server, alice):
        screen.wait_for_stdout(r"^#2 alice: short$")
    xdotool(xvfb_display, "key", "Return")   # an empty line: said, not sent
    alice.wait_for_stderr(r"^nothing sent: the line is empty$")
