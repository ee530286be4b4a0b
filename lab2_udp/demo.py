"""The instructor's demo of Lab 2: one room, four clients, a bad network.

Run it:  make demo     (or: python -m lab2_udp.demo [--windows | --headless] [--interactive] [--loss 0.2])

It starts, on this machine, a Lab 2 server, a lossy relay (lossy_relay.py)
that drops 20% of the room's datagrams and duplicates and reorders others,
and the clients alice, bob and carol. It plays a short scripted class (room
messages, a DM, an ignore, and dave joining late), then asks every screen
for its transcript hash: the room lines and the hashes agree on every
screen, although a fifth of the datagrams never arrived.

Without a display (or with --headless) it prints every screen side by side with its hash. With a
display (or --windows) the same class plays in windows tiled side by side
(server, alice, bob; carol, dave, and a panel with the relay's counters),
a line every --pace seconds; every window ends showing its hash, and the
windows close after a while. --interactive keeps them open for the class to
type in, until you press Enter in the terminal or close the panel.

Everything runs in a fresh temporary folder with its own keys and accounts.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common.config import create_env_file
from lab2_udp.lossy_relay import FaultPlan, LossyRelay, describe_counts

DEADLINE_SECONDS = 20.0
TRACEBACK_START = "Traceback (most recent call last):"
QUIT_SECONDS = 5.0           # how long a role may take to say goodbye before it is killed
HOLD_SECONDS = 20.0          # how long the windows stay up after the story (without --interactive)
WINDOW_PACE_SECONDS = 1.5    # between two scripted lines, so a class can follow them
PANEL_REFRESH_MS = 200
TILE_COLUMNS, TILE_ROWS = 3, 2
TILE_MARGIN = (8, 40)        # pixels a window manager may add around a window (borders, title bar)
COLUMN_CHARS = 26
PASSWORD = "demo password"
SCRIPT = [   # (who, what they type); "server" is the server's own keyboard
    ("alice", "hello everyone"),
    ("bob", "hi alice!"),
    ("carol", "/ignore bob"),
    ("bob", "carol, can you hear me?"),
    ("alice", "/msg carol psst: bob is talking to you"),
    ("server", "welcome to the Lab 2 demo"),
]
SCREENS = ("server", "alice", "bob", "carol", "dave")   # in tile order; the panel takes the last tile


class Role:
    """One running role script; its output lines arrive through a queue."""

    def __init__(self, label: str, module: str, args: list[str], env: dict[str, str], headless: bool,
                 cast: dict[str, Role]) -> None:
        self.label = label
        self.cast = cast   # every role of the demo: if one of them dies, waiting for a line is pointless
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        self._ended_streams: list = []   # both stdout and stderr: the role has ended and said all it will
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args, *(["--headless"] if headless else [])],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            self._lines.put(line)
        self._ended_streams.append(stream)   # one append from each reader thread: no lock needed
        self._lines.put("")   # wakes a wait_for: no line will come from this stream now

    def wait_for(self, pattern: str, lines: list[str]) -> re.Match:
        """Wait (at most DEADLINE_SECONDS, and only while every role runs) until a line of ``lines`` matches."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            for line in list(lines):
                match = re.search(pattern, line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            dead = [role for role in self.cast.values() if role.process.poll() is not None or role.crashed()]
            if remaining <= 0 or dead and self._lines.empty():
                for role in self.cast.values():   # a role that is dying: its last words first
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        role.process.wait(0.5 if role in dead else 0)
                raise RuntimeError(why_stopped(f"{self.label}: no line /{pattern}/",
                                               [*dead, self, *self.cast.values()]))
            try:   # another role may die without a word to us: look again every half second
                self._lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                pass  # the checks above report it

    def crashed(self) -> bool:
        """Whether it printed a whole traceback: a role whose event failed (a TODO region not written
        yet) may live on, but the line waited for will not come, so the wait ends now."""
        lines = list(self.stderr)
        start = next((index for index, line in enumerate(lines) if line.startswith(TRACEBACK_START)), None)
        return start is not None and any(line and not line.startswith((" ", TRACEBACK_START, "During", "The above"))
                                         for line in lines[start + 1:])

    def type(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def stop(self, hurry: bool = False) -> None:
        """Quit as a user would (the room sees the goodbye); kill it if it hangs, or at
        once if ``hurry`` (a role crashed: the room may never answer a goodbye)."""
        if hurry:
            self.process.kill()
        elif self.process.poll() is None:
            try:
                self.type("/quit")
                self.process.wait(QUIT_SECONDS)
            except (OSError, subprocess.TimeoutExpired):   # a closed pipe, or a hung role
                self.process.kill()
        self.process.wait()


def why_stopped(what: str, roles: list[Role]) -> str:
    """What went wrong, for a person: the roles that stopped and their last
    words; first of all, a TODO region that is not written yet (the students'
    copy: its handout lists them under "Your tasks")."""
    lines = [what]
    for role in dict.fromkeys(roles):
        code = role.process.poll()
        status = "still running" if code is None else f"exited with code {code}"
        lines.append(f"{role.label} ({status}): " + (" | ".join(role.stderr[-3:]) or "said nothing"))
    todo = next((line for role in roles for line in role.stderr if line.startswith("NotImplementedError")), "")
    if todo:
        lines.insert(0, f"A TODO region is not written yet: {todo.removeprefix('NotImplementedError: ')}. "
                        "The demo plays Lab 2's room: write Lab 2's regions (docs/lab2.md, \"Your tasks\", "
                        "lists them), then run make demo again. Lab 1's chat needs no demo: start "
                        "python -m lab1_tcp.server, then python -m lab1_tcp.client (docs/lab1.md).")
    return "\n".join(lines)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiles(screen_width: int, screen_height: int) -> list[str]:
    """Tk geometries ("WxH+X+Y") of a TILE_COLUMNS x TILE_ROWS grid that fills
    the screen, row by row, each window small enough that none overlaps
    the next even with a window manager's frame around it."""
    width, height = screen_width // TILE_COLUMNS, screen_height // TILE_ROWS
    return [f"{width - TILE_MARGIN[0]}x{height - TILE_MARGIN[1]}+{column * width}+{row * height}"
            for row in range(TILE_ROWS) for column in range(TILE_COLUMNS)]


class Demo:
    """The folder, the relay, the roles, and the story they play."""

    def __init__(self, folder: Path, loss: float, geometries: list[str] | None, pace_seconds: float) -> None:
        self.folder = folder
        self.env_file = folder / ".env"
        create_env_file(self.env_file)
        self.geometries = geometries   # None: headless
        self.pace_seconds = pace_seconds
        self.server_port, self.client_port = free_udp_port(), free_udp_port()
        self.plan = FaultPlan(drop=loss, duplicate=0.05, reorder=0.1, delay_ms=5, seed=2026)
        # The relay sends as the server will: broadcast, or (macOS) the loopback multicast group.
        self.relay = LossyRelay(self.plan, self.server_port, "127.255.255.255", self.client_port)
        print(f"lossy relay: {self.relay.channel.choice}", file=sys.stderr, flush=True)
        threading.Thread(target=self.relay.run, daemon=True).start()
        self.roles: dict[str, Role] = {}
        self.summaries: dict[str, str] = {}
        self.screens: dict[str, list[str]] = {}   # every screen's stdout when it gave its hash
        self.port = ""

    def start(self, label: str, module: str, args: list[str]) -> Role:
        env = {**os.environ, "CHAT_PASSWORD": PASSWORD}
        if self.geometries is not None:   # a window that takes the script's lines on stdin, in its tile
            env.update(CHAT_WINDOW_STDIN="1", CHAT_WINDOW_GEOMETRY=self.geometries[SCREENS.index(label)])
        self.roles[label] = Role(label, module, args, env, headless=self.geometries is None, cast=self.roles)
        return self.roles[label]

    def join(self, name: str) -> None:
        self.start(name, "lab2_udp.client", [
            "--port", self.port, "--env", str(self.env_file), "--broadcast-port", str(self.client_port),
            "--name", name, "--register"])
        self.roles[name].wait_for(rf"logged in as {name}", self.roles[name].stderr)

    def play(self) -> None:
        """The scripted class, ending with every screen's 'transcript HASH COUNT'."""
        server = self.start("server", "lab2_udp.server", [
            "--port", "0", "--env", str(self.env_file), "--db", str(self.folder / "chat.db"),
            "--broadcast-port", str(self.server_port)])
        self.port = server.wait_for(r"listening on [^:]+:(\d+)", server.stderr).group(1)
        for name in ("alice", "bob", "carol"):
            self.join(name)
        for who, text in SCRIPT:
            time.sleep(self.pace_seconds)   # for the audience: the windows show each line as it comes
            self.roles[who].type(text)
            if not text.startswith("/"):   # wait for the room to number it: keeps the script's order
                self.roles[who].wait_for(rf"^#\d+ {who}: {re.escape(text)}$", self.roles[who].stdout)
        self.roles["carol"].wait_for(r"^@alice -> carol", self.roles["carol"].stdout)
        time.sleep(self.pace_seconds)
        self.join("dave")                       # the late joiner: gets the history over TCP
        self.roles["dave"].type("what did I miss?")
        last = server.wait_for(r"^#(\d+) dave: what did I miss\?$", server.stdout).group(1)
        for label, role in self.roles.items():
            role.wait_for(rf"^~?#{last} ", role.stdout)
            role.type("/hash")   # a window shows it too, as a note under its transcript
            self.summaries[label] = role.wait_for(r"^transcript (\w+) (\d+)$", role.stderr).group(0)
            # What came after (the leaves, when the demo ends) is not part of the story.
            self.screens[label] = [line for line in role.stdout
                                   if not line.lstrip("~").startswith("#") or seq_of(line) <= int(last)]

    def stop(self) -> None:
        hurry = any(role.crashed() for role in self.roles.values())
        for label in reversed(self.roles):   # the clients first: the server last sees them leave
            self.roles[label].stop(hurry)
        self.relay.stop()

    def same_everywhere(self) -> bool:
        # Carol ignores bob, so his lines are placeholders ("~#4 ...") on her screen
        # only: compare the numbers every screen shows, and the hashes of the events.
        numbers = {shown_numbers(lines) for lines in self.screens.values()}
        return len(set(self.summaries.values())) == 1 and len(numbers) == 1

    def report(self) -> bool:
        """Print the screens side by side, the network's counts and the verdict."""
        print_side_by_side(self.screens, self.summaries)
        print(f"\nThe network: {describe_counts(self.plan.counts)} datagrams.")
        same = self.same_everywhere()
        print("Every screen shows the same room transcript." if same else "The screens DIFFER: that is a bug.",
              flush=True)
        return same


def seq_of(line: str) -> int:
    """12 for "#12 alice: hi", for a hidden "~#12 (hidden: ...)" and for a run
    of hidden ones, "~#12-#19 (8 hidden messages ...)"."""
    return int(re.match(r"~?#(\d+)", line).group(1))


def shown_numbers(lines: list[str]) -> tuple[int, ...]:
    """The room's numbers a screen's lines show, each once. stdout prints a run of
    hidden messages again as it grows ("~#4 ...", then "~#4-#6 ..."): its last line counts."""
    runs = {}
    for line in lines:
        numbered = re.match(r"~?#(\d+)(?:-#(\d+))? ", line)
        if numbered:
            first = int(numbered.group(1))
            runs[first] = range(first, int(numbered.group(2) or first) + 1)
    return tuple(number for run in runs.values() for number in run)


def print_side_by_side(screens: dict[str, list[str]], summaries: dict[str, str]) -> None:
    """One column per screen, one row per room event (so the rows line up),
    then each screen's private lines and its transcript hash."""
    def cell(text: str) -> str:
        return (text if len(text) <= COLUMN_CHARS else text[:COLUMN_CHARS - 1] + "…").ljust(COLUMN_CHARS)

    def row(cells) -> None:
        print(" | ".join(cell(text) for text in cells).rstrip())

    by_seq = [{f"#{seq_of(line)}" if line.lstrip("~").startswith("#") else line: line for line in lines}
              for lines in screens.values()]
    row(label.upper() for label in screens)
    for seq in sorted({key for lines in by_seq for key in lines if key.startswith("#")}, key=lambda k: int(k[1:])):
        row(lines.get(seq, "") for lines in by_seq)
    private = [[line for line in lines if line.startswith("@")] for lines in screens.values()]
    for index in range(max(map(len, private))):
        row(lines[index] if index < len(lines) else "" for lines in private)
    row(summaries[label] for label in screens)


def run_headless(folder: Path, loss: float) -> int:
    demo = Demo(folder, loss, None, pace_seconds=0)
    try:
        demo.play()
    finally:
        demo.stop()
    return 0 if demo.report() else 1


def run_in_windows(folder: Path, loss: float, pace_seconds: float, interactive: bool) -> int:
    """The story in tiled windows. The relay's counters live in a panel in the
    last tile, drawn by this process's Tk loop (main thread) while a worker
    thread plays the story: Tk must only be touched from one thread."""
    import tkinter as tk  # here, not on top: the headless demo must run without Tk

    panel = tk.Tk()
    panel.title("Lab 2 demo: the network")
    geometries = tiles(panel.winfo_screenwidth(), panel.winfo_screenheight())
    panel.geometry(geometries[-1])
    counters = tk.Label(panel, justify="left", anchor="nw", font=("TkFixedFont", 14), padx=12, pady=12)
    counters.pack(fill="both", expand=True)
    demo = Demo(folder, loss, geometries, pace_seconds)
    done_watching = threading.Event()   # Enter pressed, the panel closed, or the hold is over
    panel.protocol("WM_DELETE_WINDOW", done_watching.set)
    outcome = {"verdict": "the class is under way...", "code": 1}

    def story() -> None:
        try:
            demo.play()
            same = demo.report()
            outcome["code"] = 0 if same else 1
            outcome["verdict"] = ("every screen: " + next(iter(demo.summaries.values())) if same
                                  else "the screens DIFFER: that is a bug")
            if interactive:
                print("The windows are yours: chat in them. Press Enter here (or close the panel) to end.",
                      flush=True)
                threading.Thread(target=lambda: (sys.stdin.readline(), done_watching.set()), daemon=True).start()
                done_watching.wait()
            else:
                print(f"The windows close in {HOLD_SECONDS:.0f} s (--interactive keeps them open).", flush=True)
                done_watching.wait(HOLD_SECONDS)
        except RuntimeError as error:   # a role did not do its part: say which, and why
            outcome["verdict"] = f"the demo failed: {error}"
            print(error, file=sys.stderr, flush=True)
        finally:
            demo.stop()

    def refresh() -> None:
        counts = dict(demo.plan.counts)   # one copy: the relay's thread keeps counting
        dropped_percent = 100 * counts.get("dropped", 0) / max(1, counts.get("received", 0))
        counters.configure(text=f"The network (lossy relay)\n\n{describe_counts(counts).replace(', ', chr(10))}"
                                f"\n({dropped_percent:.0f}% lost)\n\n{outcome['verdict']}")
        if worker.is_alive():
            panel.after(PANEL_REFRESH_MS, refresh)
        else:
            panel.quit()

    worker = threading.Thread(target=story, daemon=True)
    worker.start()
    refresh()
    panel.mainloop()
    panel.destroy()
    return outcome["code"]


def _screen_at_hand() -> bool:
    """Whether windows can open: a Windows or macOS session always has its screen; on
    Linux and the other Unixes, X11 (DISPLAY) or Wayland (WAYLAND_DISPLAY) names it."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab2_udp.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--windows", action="store_true", help="open the windows even if unsure of a display")
    parser.add_argument("--headless", action="store_true", help="play in the terminal even with a screen at hand")
    parser.add_argument("--interactive", action="store_true",
                        help="with windows: keep them open after the story, until Enter is pressed")
    parser.add_argument("--loss", type=float, default=0.2,
                        help="share of room datagrams the network loses (default: %(default)s)")
    parser.add_argument("--pace", type=float, default=WINDOW_PACE_SECONDS,
                        help="with windows: seconds between two scripted lines (default: %(default)s)")
    args = parser.parse_args(argv)
    windows = args.windows or (_screen_at_hand() and not args.headless)
    if windows and importlib.util.find_spec("tkinter") is None:
        print("tkinter is missing, so the demo plays in the terminal (python3 kit.py setup says how to "
              "install it)", file=sys.stderr, flush=True)
        windows = False
    folder = Path(tempfile.mkdtemp(prefix="chat-lab-demo-"))
    try:
        if windows:
            return run_in_windows(folder, args.loss, args.pace, args.interactive)
        return run_headless(folder, args.loss)
    except KeyboardInterrupt:   # Ctrl-C reaches the roles too (one terminal): each quits by itself
        print("the demo was interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:   # a role did not do its part: say which, and why
        print(f"the demo stopped:\n{error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
