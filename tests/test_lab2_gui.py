"""Lab 2's windows under a virtual X server: the server and three clients,
typed into with xdotool as a person would type; a refused line; and the
windowed demo, tiled on the screen.

A window prints its transcript on stdout too (docs/lab2.md), so the test
reads stdout to see what every window shows. Every wait has a deadline.
"""
from __future__ import annotations

import re
import shutil

import pytest

from common.messages import MAX_TEXT_BYTES
from tests.procs import Processes
from tests.test_lab2 import Room
from tests.xvfb import type_into_window, xdotool, xvfb_display  # noqa: F401  (a fixture)

SCREEN = (1280, 800)             # Xvfb's screen: see tests/xvfb.py
DEMO_DEADLINE_SECONDS = 120.0    # the whole scripted class, on a busy machine


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


def window_rectangles(display: str, title_pattern: str) -> dict[str, tuple[int, int, int, int]]:
    """Every window whose title matches: title -> (x, y, width, height)."""
    rectangles = {}
    for window in xdotool(display, "search", "--name", title_pattern).split():
        shell = dict(line.split("=", 1) for line in
                     xdotool(display, "getwindowgeometry", "--shell", window).splitlines())
        rectangles[xdotool(display, "getwindowname", window)] = tuple(
            int(shell[key]) for key in ("X", "Y", "WIDTH", "HEIGHT"))
    return rectangles


def overlap(first: tuple[int, int, int, int], second: tuple[int, int, int, int]) -> bool:
    (x1, y1, w1, h1), (x2, y2, w2, h2) = first, second
    return x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1


@pytest.mark.gui
@pytest.mark.network
@pytest.mark.points(3)
def test_windowed_demo_plays_the_class_in_tiles_and_every_screen_ends_with_one_hash(xvfb_display):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    with Processes(base_env={"DISPLAY": xvfb_display}) as processes:
        demo = processes.start("lab2_udp.demo", "--interactive", "--pace", "0")
        demo.wait_for_stdout(r"^The windows are yours", timeout=DEMO_DEADLINE_SECONDS)
        assert "Every screen shows the same room transcript." in demo.stdout_lines, demo.output()
        hashes = demo.stdout_lines[demo.stdout_lines.index("") - 1].split(" | ")
        assert len(hashes) == 5 and len({text.strip() for text in hashes}) == 1, demo.output()
        assert re.match(r"^The network: received \d+, dropped \d+", demo.stdout_lines[-3]), demo.output()
        windows = window_rectangles(xvfb_display, "^Lab 2 ")
        assert sorted(windows) == sorted([f"Lab 2 room: {name}" for name in
                                          ("server", "alice", "bob", "carol", "dave")]
                                         + ["Lab 2 demo: the network"])
        for title, rectangle in windows.items():
            x, y, width, height = rectangle
            assert x >= 0 and y >= 0 and x + width <= SCREEN[0] and y + height <= SCREEN[1], title
            assert width >= SCREEN[0] // 4 and height >= SCREEN[1] // 3, (title, rectangle)   # readable
            for other_title, other in windows.items():
                assert other_title == title or not overlap(rectangle, other), (title, other_title)
        demo.send_line("")   # Enter: the demo ends, and closes every window
        assert demo.wait_exit() == 0, demo.output()
    assert not any("Traceback" in line for line in demo.stderr_lines), demo.output()
