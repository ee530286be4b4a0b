"""The Lab 2 server's memory over a 3-hour class, and what a late joiner
downloads: the real ``common.room.Room``, driven by a made-up clock, with
Python's own allocation tracer (tracemalloc) as the scale.

A full room (250 members) where CHATTY members talk at their budget
(MAX_MESSAGES_PER_SECOND, 20 lines a second) for three hours, each line 990
bytes, the longest a line may be give or take its number, and each a string
of its own, as if decoded from the wire: the worst a member can do within
the rules. The room's check of a line's characters is left out (it costs a
millisecond for such a line and keeps nothing). The server ticks after every line, as
lab2_udp/server.py does after every round. Every half hour (and at 10
and 1 minute) the table shows the memory the room holds, the log's window, and
what a member joining then downloads (its login's history and the repairs
it asks for until it is level with the room). Then the same class with a
window too large to fill, for its first 10 minutes, as the server was
before it had one.

    python bench/room_memory.py [CHATTY]   # default 1; 20 is one student's whole address
"""
from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import room as room_module  # noqa: E402
from common.accounts import AccountStore  # noqa: E402
from common.messages import History, HistoryStart, RepairRequest, Say, encode  # noqa: E402
from common.room import Delivery, Room  # noqa: E402

MEMBERS = 250
LINES_PER_SECOND = 20      # MAX_MESSAGES_PER_SECOND's default: the per-member budget
LINE = "x" * 990
CLASS_SECONDS = 3 * 3600
REPORT_AT_SECONDS = (60, 600, 1800, 3600, 5400, 7200, 9000, 10800)
UNBOUNDED_SECONDS = 600


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def full_room(clock: Clock, **window) -> Room:
    room = Room("server", AccountStore(":memory:"), bytes(32), max_members=MEMBERS + 1,
                max_members_per_source=MEMBERS + 1, clock=clock, **window)
    for member in range(MEMBERS):
        room.join(member, f"member_{member:03}", f"10.0.{member // 100}.{member % 100}")
    room.tick(force=True)
    return room


def late_join_bytes(room: Room, clock: Clock) -> int:
    """What a member joining now downloads until it is level with the room:
    its history, then a repair from where that left off, again and again
    (one a tenth of a second, as allowances allow). Then it leaves."""
    received, delivered = 0, 0

    def take(deliveries: list[Delivery]) -> None:
        nonlocal received, delivered
        for delivery in deliveries:
            if isinstance(delivery.message, (History, HistoryStart)):
                received += len(encode(delivery.message))
            if isinstance(delivery.message, HistoryStart):
                delivered = delivery.message.summary.seq
            elif isinstance(delivery.message, History) and delivery.message.events:
                delivered = delivery.message.events[-1].seq

    take(room.join("late", "late_joiner", "10.9.9.9"))
    while delivered < room.latest_seq - 1:   # the join logged after its history: not needed
        clock.now += 0.1
        take(room.handle("late", RepairRequest(delivered)))
    room.leave("late")
    room.tick(force=True)
    return received


def run_class(chatty: int, seconds: int, report_at: tuple[int, ...], **window) -> list[dict]:
    """One class: ``chatty`` members at their budget; a row at each of ``report_at``."""
    clock = Clock()
    tracemalloc.start()
    room = full_room(clock, **window)
    rows, next_report = [], list(report_at)
    step = 1 / LINES_PER_SECOND
    for tick_number in range(int(seconds * LINES_PER_SECOND) + 1):
        clock.now = tick_number * step
        for member in range(chatty):
            room.handle(member, Say(f"{tick_number:08}{LINE[8:]}"))
        room.tick()
        if next_report and clock.now >= next_report[0]:
            started = clock.now
            memory = tracemalloc.get_traced_memory()[0]
            join_bytes = late_join_bytes(room, clock)
            clock.now = started   # the joiner's catching up took no class time
            rows.append({"at": next_report.pop(0), "logged": room.latest_seq, "kept": len(room.log),
                         "window_bytes": room.log.bytes, "memory": memory, "join_bytes": join_bytes})
    tracemalloc.stop()
    return rows


def main() -> None:
    chatty = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    started = time.perf_counter()
    room_module.checked_text = str   # every line here is chat text; see the docstring
    rows = run_class(chatty, CLASS_SECONDS, REPORT_AT_SECONDS)
    unbounded = run_class(chatty, UNBOUNDED_SECONDS, (UNBOUNDED_SECONDS,), history_events=10**9, history_bytes=10**12)
    print(f"A {MEMBERS}-member room, {chatty} member(s) saying {LINES_PER_SECOND} lines of {len(LINE)} bytes "
          f"a second for 3 hours (the default window: ROOM_HISTORY_EVENTS, ROOM_HISTORY_BYTES)\n")
    print("| class time | events logged | events kept | window MB | room memory MiB | late join downloads MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['at'] // 3600}:{row['at'] % 3600 // 60:02} | {row['logged']:,} | {row['kept']:,} | "
              f"{row['window_bytes'] / 1e6:.2f} | {row['memory'] / 2**20:.1f} | {row['join_bytes'] / 1e6:.2f} |")
    at = {row["at"]: row for row in rows}
    print(f"\nmemory at 1 h / at 3 h: {at[3600]['memory'] / at[10800]['memory']:.3f}; "
          f"at 10 min / at 3 h: {at[600]['memory'] / at[10800]['memory']:.3f}")
    print(f"late join downloads at 1 min / at 3 h: {at[60]['join_bytes'] / at[10800]['join_bytes']:.3f}; "
          f"at 10 min / at 3 h: {at[600]['join_bytes'] / at[10800]['join_bytes']:.3f}")
    [first] = unbounded
    growth = first["memory"] / UNBOUNDED_SECONDS * CLASS_SECONDS
    print(f"without a window: {first['memory'] / 2**20:.1f} MiB and a {first['join_bytes'] / 1e6:.1f} MB late join "
          f"after 10 min, so about {growth / 2**20:.0f} MiB at 3 h: "
          f"{growth / at[10800]['memory']:.0f} times the window's")
    print(f"\n({time.perf_counter() - started:.0f} s to model)")


if __name__ == "__main__":
    main()
