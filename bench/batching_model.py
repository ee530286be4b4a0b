"""What a batching rule itself costs, without a machine's noise: the real
``common.room.Room`` driven by a made-up clock.

Chat lines arrive at random (a Poisson stream: a room of members who each
type when they like) at the rate of a quiet room, a busy one and a very busy
one. After every line the server ticks the room, as lab2_udp/server.py does
after every round, and it wakes when ``wait_at_most()`` says, so the only
wait is the one the rule chose. For each rule: how long lines waited in the
server (p50, p99) and how many lines shared a datagram, so a signature check.
The live bench (lab2_fanout.py) adds what the machine adds: the network, the
crypto and, on a busy machine, queueing.

    python bench/batching_model.py
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import room as room_module  # noqa: E402
from common.accounts import AccountStore  # noqa: E402
from common.room import Batching, Broadcast, Room  # noqa: E402

RATES_PER_SECOND = {"quiet room (5 lines/s)": 5, "busy room (250 lines/s)": 250,
                    "very busy room (2,500 lines/s)": 2500}
MODELLED_SECONDS = 20.0
LINE = "12 345 6789012345678"   # about the size of the live bench's lines


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def model(rule: Batching, lines_per_second: float, seconds: float = MODELLED_SECONDS,
          seed: int = 2026) -> dict:
    """Drive a room with this rule; returns p50/p99 of the wait (ms) and lines per datagram."""
    clock, rng = Clock(), random.Random(seed)
    saved, room_module.BATCHING = room_module.BATCHING, rule
    try:
        room = Room("server", AccountStore(":memory:"), bytes(32), clock=clock)
        room.tick()   # the first heartbeat
        logged_at: dict[int, float] = {}
        waits, datagrams = [], 0
        arrival = rng.expovariate(lines_per_second)
        while arrival < seconds or logged_at:   # until the last line is out
            due = clock.now + room.wait_at_most()
            if arrival < seconds and arrival <= due:
                clock.now = arrival
                room.server_says(LINE)
                logged_at[room.latest_seq] = clock.now
                arrival += rng.expovariate(lines_per_second)
            else:
                clock.now = due
            for instruction in room.tick():
                if isinstance(instruction, Broadcast) and instruction.batch.events:
                    datagrams += 1
                    waits += [clock.now - logged_at.pop(event.seq) for event in instruction.batch.events]
    finally:
        room_module.BATCHING = saved
    waits.sort()
    return {"wait_p50_ms": 1000 * waits[len(waits) // 2], "wait_p99_ms": 1000 * waits[int(len(waits) * 0.99)],
            "lines_per_datagram": len(waits) / max(1, datagrams)}


def measure_all(candidates: dict[str, Batching]) -> list[dict]:
    """One row per (rate, rule)."""
    return [{"load": load, "candidate": name, **model(rule, rate)}
            for load, rate in RATES_PER_SECOND.items() for name, rule in candidates.items()]


def main() -> int:
    import lab2_fanout
    for row in measure_all(lab2_fanout.BATCHING_CANDIDATES):
        print(f"{row['load']:32} {row['candidate']:34} wait p50 {row['wait_p50_ms']:5.2f} ms, "
              f"p99 {row['wait_p99_ms']:5.2f} ms, {row['lines_per_datagram']:5.2f} lines/datagram")
    return 0


if __name__ == "__main__":
    sys.exit(main())
