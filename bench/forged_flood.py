"""Does a flood of forged datagrams from the server's own host stall an honest member?

One real server and one real client (``python -m lab2_udp.client``, headless)
on loopback. The member says a line every PROBE_INTERVAL_SECONDS, stamped
with the time it was typed, and we time it until the member's own screen
shows it numbered: typed, sent over TCP, broadcast, heard, opened, shown.
First with nothing else going on, then while another program on this host
sends forged datagrams to the room's broadcast port as fast as one process
can, at most FLOOD_DATAGRAMS of them. On loopback every address is the
server's host, so the forgeries cannot be told apart by address; the client
must still hear the server's genuine datagrams among them.

    python bench/forged_flood.py [--quick]

It prints p50/p99 before and during, their ratio, and the client's own count
of datagrams opened, rejected and ignored unopened.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lab2_fanout import BROADCAST_ADDR, SETTING_VARIABLES, start_kit_server  # noqa: E402

PROBE_INTERVAL_SECONDS = 0.1   # 10 lines a second: within a member's budget of 20 requests
FLOOD_DATAGRAMS = 2_000_000    # the attack is bounded: at most this many, and only while we measure
FLOOD_RATES = (50_000, None)   # datagrams a second (50,000 of 300 B: 120 Mbit/s); None: as fast as it can
FORGED_BYTES = 300             # about a room datagram's size
PASSWORD = "bench password 1"
PROBES = {False: 150, True: 50}   # per phase


def flood(port: int, rate: int | None, stop, sent) -> None:
    """Send forged datagrams to the broadcast port, ``rate`` a second (None: as
    fast as it can), until told to stop (runs in a process of its own)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind(("127.0.0.1", 0))   # the server's host: on loopback, this machine
    forged = os.urandom(FORGED_BYTES)
    count, started = 0, time.monotonic()
    while count < FLOOD_DATAGRAMS and not stop.is_set():
        for _ in range(500):
            try:
                sock.sendto(forged, (BROADCAST_ADDR, port))
            except OSError:   # ENOBUFS: the kernel is full; go on
                pass
        count += 500
        if rate is not None:   # pace: 500 at a time, each burst on its schedule
            time.sleep(max(0.0, started + count / rate - time.monotonic()))
    sent.value = count


class Member:
    """The real client as a process; every stdout line kept with the time it arrived."""

    def __init__(self, room: dict, name: str) -> None:
        env = {**{k: v for k, v in os.environ.items() if k not in SETTING_VARIABLES}, "CHAT_PASSWORD": PASSWORD}
        host, port = room["address"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lab2_udp.client", "--headless", "--name", name, "--register",
             "--host", host, "--port", str(port), "--broadcast-port", str(room["broadcast_port"]),
             "--env", room["env_file"]],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.shown: dict[str, int] = {}     # probe text -> when its line appeared (ns)
        self.stderr: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            now = time.monotonic_ns()
            match = re.search(r": (probe \d+)$", raw.decode(errors="replace").rstrip())
            if match:
                with self.changed:
                    self.shown[match.group(1)] = now
                    self.changed.notify_all()

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            with self.changed:
                self.stderr.append(raw.decode(errors="replace").rstrip())
                self.changed.notify_all()

    def wait(self, condition, timeout: float = 60.0) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def say(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()


def measure(member: Member, first: int, probes: int) -> list[float]:
    """Latencies (ms) of ``probes`` lines, typed PROBE_INTERVAL_SECONDS apart."""
    typed = {}
    for number in range(first, first + probes):
        typed[f"probe {number}"] = time.monotonic_ns()
        member.say(f"probe {number}")
        time.sleep(PROBE_INTERVAL_SECONDS)   # pacing the load, not waiting for a result
    member.wait(lambda: all(text in member.shown for text in typed), timeout=60)
    return [(member.shown[text] - at) / 1e6 for text, at in typed.items() if text in member.shown]


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1] if values else float("nan")


def run(room: dict, name: str, probes: int, rate: int | None) -> tuple[list[float], list[float], dict]:
    """A new member: its latencies before and during a flood at ``rate``, and
    its own count of the datagrams it opened, rejected and ignored unopened."""
    member = Member(room, name)
    try:
        if not member.wait(lambda: any(line.startswith("logged in as") for line in member.stderr)):
            raise SystemExit("the member did not log in:\n" + "\n".join(member.stderr))
        before = measure(member, 0, probes)
        stop, sent = multiprocessing.Event(), multiprocessing.Value("q", 0)
        attacker = multiprocessing.Process(target=flood, args=(room["broadcast_port"], rate, stop, sent))
        attacker.start()
        during = measure(member, probes, probes)
        stop.set()
        attacker.join()
        member.say("/quit")   # the client says its datagram counts as it ends
        member.wait(lambda: any(line.startswith("datagrams:") for line in member.stderr))
    finally:
        member.process.kill()
    line = next((line for line in member.stderr if line.startswith("datagrams:")), "datagrams: 0 0 0")
    opened, rejected, ignored = (int(number) for number in re.findall(r"\d+", line))
    return before, during, {"sent": sent.value, "opened": opened, "rejected": rejected, "ignored": ignored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer probes")
    probes = PROBES[parser.parse_args().quick]
    with tempfile.TemporaryDirectory() as tmp:
        room = start_kit_server(Path(tmp), "")
        try:
            results = [(rate, *run(room, f"member{number}", probes, rate)) for number, rate in enumerate(FLOOD_RATES)]
        finally:
            room["server"].stop()
    for rate, before, during, counts in results:
        # A forgery the member neither ignored nor opened was dropped by the kernel: its buffer was full.
        lost = counts["sent"] - counts["ignored"] - counts["rejected"]
        print(f"flood {'as fast as one process sends' if rate is None else f'of {rate} datagrams/s'}: "
              f"{counts['sent']} forged datagrams, {lost} of them dropped by the kernel")
        print(f"  before: p50 {percentile(before, 0.5):.1f} ms, p99 {percentile(before, 0.99):.1f} ms")
        print(f"  during: p50 {percentile(during, 0.5):.1f} ms, p99 {percentile(during, 0.99):.1f} ms "
              f"({len(during)} of {probes} lines shown; {counts['opened']} genuine datagrams opened in all)")
        print(f"  p99 during / before: {percentile(during, 0.99) / percentile(before, 0.99):.1f}; "
              f"p50: {percentile(during, 0.5) / percentile(before, 0.5):.1f}")


if __name__ == "__main__":
    main()
