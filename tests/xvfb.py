"""A private X display for the GUI tests: Xvfb, a virtual screen in memory.

    def test_window(xvfb_display):   # "DISPLAY" value, e.g. ":7"
        ...

The fixture skips the test, saying why, when Xvfb is not installed (CI
installs it: see .ci/run). Xvfb picks a free display number itself and
writes it to a pipe once it accepts clients (-displayfd), so there is no
guessing and no waiting on a timer.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess

import pytest

from tests.procs import DEADLINE_SECONDS


def start_xvfb() -> tuple[subprocess.Popen, str]:
    """Start Xvfb; return the process and its DISPLAY value once it is ready."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24",
             "-nolisten", "tcp"],
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
