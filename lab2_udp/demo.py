"""The instructor's demo of Lab 2: one room, four clients, a bad network.

Run it:  make demo     (or: python -m lab2_udp.demo [--windows] [--loss 0.2])

It starts, on this machine, a Lab 2 server, a lossy relay (lossy_relay.py)
that drops 20% of the room's datagrams and duplicates and reorders others,
and the clients alice, bob and carol. Without a display it plays a short
scripted conversation (room messages, a DM, an ignore, and dave joining
late) and prints every screen side by side with its transcript hash: the
room lines and the hashes agree on every screen, although a fifth of the
datagrams never arrived. With a display (or --windows) it opens the windows
instead and lets you chat; press Enter in the terminal to close them all.

Everything runs in a fresh temporary folder with its own keys and accounts.
"""
from __future__ import annotations

import argparse
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
from lab2_udp.lossy_relay import FaultPlan, LossyRelay

DEADLINE_SECONDS = 20.0
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


class Role:
    """One running role script; its output lines arrive through a queue."""

    def __init__(self, label: str, module: str, args: list[str], env: dict[str, str], headless: bool) -> None:
        self.label = label
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args, *(["--headless"] if headless else [])],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))
            self._lines.put(line)

    def wait_for(self, pattern: str, lines: list[str]) -> re.Match:
        """Wait (at most DEADLINE_SECONDS) until a line of ``lines`` matches."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            for line in list(lines):
                match = re.search(pattern, line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None and self._lines.empty():
                raise RuntimeError(f"{self.label}: no line /{pattern}/\n" + "\n".join(self.stderr))
            try:
                self._lines.get(timeout=remaining)
            except queue.Empty:
                pass  # the deadline check above reports it

    def type(self, text: str) -> None:
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_demo(folder: Path, loss: float, headless: bool) -> int:
    env_file = folder / ".env"
    create_env_file(env_file)
    server_port, client_port = free_udp_port(), free_udp_port()
    env = {**os.environ, "CHAT_PASSWORD": PASSWORD}
    plan = FaultPlan(drop=loss, duplicate=0.05, reorder=0.1, delay_ms=5, seed=2026)
    relay = LossyRelay(plan, server_port, "127.255.255.255", client_port)
    threading.Thread(target=relay.run, daemon=True).start()
    roles: dict[str, Role] = {}
    try:
        roles["server"] = Role("server", "lab2_udp.server", [
            "--port", "0", "--env", str(env_file), "--db", str(folder / "chat.db"),
            "--broadcast-port", str(server_port)], env, headless)
        port = roles["server"].wait_for(r"listening on [^:]+:(\d+)", roles["server"].stderr).group(1)

        def join(name: str) -> None:
            roles[name] = Role(name, "lab2_udp.client", [
                "--port", port, "--env", str(env_file), "--broadcast-port", str(client_port),
                "--name", name, "--register"], env, headless)
            roles[name].wait_for(rf"logged in as {name}", roles[name].stderr)

        for name in ("alice", "bob", "carol"):
            join(name)
        if not headless:
            print("The windows are open: chat in them. Press Enter here to close them all.")
            input()
            return 0
        for who, text in SCRIPT:
            roles[who].type(text)
            if not text.startswith("/"):   # wait for the room to number it: keeps the script's order
                roles[who].wait_for(rf"^#\d+ {who}: {re.escape(text)}$", roles[who].stdout)
        roles["carol"].wait_for(r"^@alice -> carol", roles["carol"].stdout)
        join("dave")                       # the late joiner: gets the history over TCP
        roles["dave"].type("what did I miss?")
        last = roles["server"].wait_for(r"^#(\d+) dave: what did I miss\?$", roles["server"].stdout).group(1)
        summaries = {}
        for label, role in roles.items():
            role.wait_for(rf"^~?#{last} ", role.stdout)
            role.type("/hash")
            summaries[label] = role.wait_for(r"^transcript (\w+) (\d+)$", role.stderr).group(0)
    finally:
        for role in roles.values():
            role.stop()
        relay.stop()
    print_side_by_side(roles, summaries)
    print(f"\nThe network: {', '.join(f'{name} {count}' for name, count in plan.counts.items())} datagrams.")
    # Carol ignores bob, so his lines are placeholders ("~#4 ...") on her screen
    # only: compare the numbers every screen shows, and the hashes of the events.
    numbers = {tuple(line.lstrip("~").split(" ")[0] for line in role.stdout if line.lstrip("~").startswith("#"))
               for role in roles.values()}
    same = len(set(summaries.values())) == 1 and len(numbers) == 1
    print("Every screen shows the same room transcript." if same else "The screens DIFFER: that is a bug.")
    return 0 if same else 1


def print_side_by_side(roles: dict[str, Role], summaries: dict[str, str]) -> None:
    """One column per screen, one row per room event (so the rows line up),
    then each screen's private lines and its transcript hash."""
    def cell(text: str) -> str:
        return (text if len(text) <= COLUMN_CHARS else text[:COLUMN_CHARS - 1] + "…").ljust(COLUMN_CHARS)

    def row(cells) -> None:
        print(" | ".join(cell(text) for text in cells).rstrip())

    screens = list(roles.values())
    by_seq = [{line.lstrip("~").split(" ")[0]: line for line in role.stdout} for role in screens]
    row(label.upper() for label in roles)
    for seq in sorted({key for lines in by_seq for key in lines if key.startswith("#")}, key=lambda k: int(k[1:])):
        row(lines.get(seq, "") for lines in by_seq)
    private = [[line for line in role.stdout if line.startswith("@")] for role in screens]
    for index in range(max(map(len, private))):
        row(lines[index] if index < len(lines) else "" for lines in private)
    row(summaries[label] for label in roles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab2_udp.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--windows", action="store_true", help="open the windows even if unsure of a display")
    parser.add_argument("--loss", type=float, default=0.2, help="share of room datagrams the network loses")
    args = parser.parse_args(argv)
    headless = not (args.windows or os.environ.get("DISPLAY"))
    folder = Path(tempfile.mkdtemp(prefix="chat-lab-demo-"))
    try:
        return run_demo(folder, args.loss, headless)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
