"""Take docs/lab1.png, docs/lab2.png and docs/wire.png on a private virtual screen.

Run it:  make screenshots     (needs Xvfb and ImageMagick's `import`)

Lab 2: the instructor's demo (lab2_udp/demo.py) plays its scripted class in
tiled windows; once every window shows its hash, the whole screen is taken.
Lab 1: a server and a client window side by side, a short scripted chat
typed into them through stdin (CHAT_WINDOW_STDIN=1, see common/ui.py).
The wire view: the same chat with --wire, the client's window alone and wider.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.config import create_env_file
from lab2_udp.demo import DEADLINE_SECONDS, Role
from tests.xvfb import start_xvfb

DOCS = Path(__file__).resolve().parents[1] / "docs"
WINDOWS_DRAW_SECONDS = 1.0   # a picture, not a test: a moment for every window to redraw
LAB1_WINDOW = (630, 360)   # each Lab 1 window, side by side at the top of the screen
WIRE_WINDOW = (1270, 330)  # the client's window with the wire view on: its lines are long
LAB1_CHAT = [   # (who types, what)
    ("client", "hi, is this the Lab 1 server?"),
    ("server", "it is: everything you see went over the wire encrypted"),
    ("client", "what if a second client connects now?"),
    ("server", "it is told that I am busy, and our chat goes on"),
]


def screenshot(display: str, path: Path, crop: str | None = None) -> None:
    """The whole screen (or the ``crop`` "WxH+X+Y" of it) as a PNG."""
    command = ["import", "-window", "root", *(["-crop", crop] if crop else []), str(path)]
    subprocess.run(command, env={**os.environ, "DISPLAY": display}, check=True, timeout=DEADLINE_SECONDS)
    print(f"wrote {path}")


def lab2(display: str) -> None:
    env = {**os.environ, "DISPLAY": display}
    demo = subprocess.Popen([sys.executable, "-m", "lab2_udp.demo", "--interactive", "--pace", "0"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in demo.stdout:   # the demo's own waits have deadlines: this loop ends
            if line.startswith("The windows are yours"):
                break
        else:
            raise RuntimeError("the demo ended before its windows were ready")
        time.sleep(WINDOWS_DRAW_SECONDS)   # the panel shows the verdict at its next refresh
        screenshot(display, DOCS / "lab2.png")
        demo.stdin.write("\n")   # Enter: the demo closes its windows
        demo.stdin.flush()
        demo.wait(DEADLINE_SECONDS)
    finally:
        if demo.poll() is None:
            demo.kill()
        demo.wait()


def lab1(display: str, folder: Path, wire: bool = False) -> None:
    """docs/lab1.png: both windows; with ``wire``, docs/wire.png: the client's, wire view on."""
    env_file = folder / ".env"
    create_env_file(env_file)
    width, height = WIRE_WINDOW if wire else LAB1_WINDOW
    base = {**os.environ, "DISPLAY": display, "CHAT_WINDOW_STDIN": "1", "CHAT_PASSWORD": "screenshot"}
    server = Role("server", "lab1_tcp.server", [
        "--host", "127.0.0.1", "--port", "0", "--env", str(env_file), "--db", str(folder / "chat.db")],
        {**base, "CHAT_WINDOW_GEOMETRY": f"{LAB1_WINDOW[0]}x{LAB1_WINDOW[1]}+0+{height + 10}" if wire
         else f"{width}x{height}+0+0"}, headless=False)
    roles = {"server": server}
    try:
        port = server.wait_for(r"listening on [^:]+:(\d+)", server.stderr).group(1)
        roles["client"] = Role("client", "lab1_tcp.client", [
            "--host", "127.0.0.1", "--port", port, "--name", "alice", "--register", "--env", str(env_file),
            *(["--wire"] if wire else [])],
            {**base, "CHAT_WINDOW_GEOMETRY": f"{width}x{height}+0+0" if wire else f"{width}x{height}+{width + 10}+0"},
            headless=False)
        roles["client"].wait_for(r"^logged in as alice$", roles["client"].stderr)
        for who, text in LAB1_CHAT:
            roles[who].type(text)
            other = roles["server" if who == "client" else "client"]
            other.wait_for(rf": {re.escape(text)}$", other.stdout)
        time.sleep(WINDOWS_DRAW_SECONDS)   # the windows draw between two polls of their loop
        if wire:
            screenshot(display, DOCS / "wire.png", crop=f"{width}x{height}+0+0")
        else:
            screenshot(display, DOCS / "lab1.png", crop=f"{2 * width + 10}x{height}+0+0")
    finally:
        for role in reversed(roles.values()):
            role.stop()


def main() -> int:
    xvfb, display = start_xvfb()
    try:
        with tempfile.TemporaryDirectory(prefix="chat-lab-screenshots-") as folder:
            lab1(display, Path(folder))
        with tempfile.TemporaryDirectory(prefix="chat-lab-screenshots-") as folder:
            lab1(display, Path(folder), wire=True)
        lab2(display)
    finally:
        xvfb.kill()
        xvfb.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
