"""A private X display for the GUI tests: Xvfb, a virtual screen in memory.

    def test_window(xvfb_display):   # "DISPLAY" value, e.g. ":7"
        type_into_window(xvfb_display, "Lab 1 client: alice", "hi")   # and Enter
        xdotool(xvfb_display, "key", "ctrl+x")

The fixture skips the test, saying why, when Xvfb is not installed (CI
installs it: see .ci/run). Xvfb picks a free display number itself and
writes it to a pipe once it accepts clients (-displayfd), so there is no
guessing and no waiting on a timer. xdotool plays the user: it finds a
window by its title, focuses it and types; its --sync options wait until
the X server has done it. ``screenshot`` saves the whole screen as a PNG:
the grader takes one when a window test fails (tests/grading.py).
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.procs import DEADLINE_SECONDS


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Start Xvfb; return the process and its DISPLAY value once it is ready."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            # -r: no key auto-repeat. xdotool presses and releases each key; on a busy
            # machine the release can come later than the repeat delay, and the key
            # would then be typed twice ("thhe").
            ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24",
             "-nolisten", "tcp", "-r"],
            pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_end)
        number = b""
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], DEADLINE_SECONDS)
            chunk = os.read(read_end, 16) if ready else b""
            if not chunk:
                process.kill()
                process.wait()
                raise RuntimeError("Xvfb did not report a display number")
            number += chunk
    finally:
        os.close(read_end)
    return process, ":" + number.decode().strip()


@pytest.fixture
def xvfb_display():
    """The DISPLAY of a fresh Xvfb, stopped after the test."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); CI installs it")
    process, display = start_xvfb()
    yield display
    process.kill()
    process.wait()


def xdotool(display: str, *args: str) -> str:
    """Run xdotool on ``display``; return what it printed (window ids, say)."""
    result = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display},
                            capture_output=True, text=True, timeout=DEADLINE_SECONDS, check=True)
    return result.stdout.strip()


def type_into_window(display: str, title: str, text: str) -> str:
    """Focus the window called ``title``, type ``text`` and press Enter;
    return the window's id."""
    window = xdotool(display, "search", "--sync", "--onlyvisible", "--name", f"^{title}$").split()[0]
    xdotool(display, "windowfocus", "--sync", window)
    xdotool(display, "type", "--delay", "5", text)
    xdotool(display, "key", "Return")
    return window


def screenshot(display: str, path: Path) -> Path:
    """Save the whole screen of ``display`` as a PNG at ``path``; return it.
    ImageMagick's import reads the screen itself; without it, xwd dumps the
    screen and ImageMagick's convert turns the dump into a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DISPLAY": display}
    if shutil.which("import"):
        subprocess.run(["import", "-display", display, "-window", "root", str(path)], env=env,
                       capture_output=True, timeout=DEADLINE_SECONDS, check=True)
    else:
        dump = subprocess.run(["xwd", "-root", "-silent", "-display", display], env=env,
                              capture_output=True, timeout=DEADLINE_SECONDS, check=True).stdout
        subprocess.run(["convert", "xwd:-", f"png:{path}"], input=dump, capture_output=True,
                       timeout=DEADLINE_SECONDS, check=True)
    return path
