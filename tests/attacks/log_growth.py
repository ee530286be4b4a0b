"""Measure how the Lab 2 server's memory grows with the room log. The server
keeps a window of it (common/roomlog.py: ROOM_HISTORY_EVENTS, ROOM_HISTORY_BYTES),
so past the window the growth per event falls to nothing; bench/room_memory.py
measures the same over a simulated 3-hour class, without sockets. Run from
the kit's folder:

    .venv/bin/python -m tests.attacks.log_growth [MEMBERS]

MEMBERS (default 200) accounts log in; every one says 20 lines of 990 bytes
at once, one second's budget, and the script waits for the server to number
them all. It prints the
server's resident memory (VmRSS, /proc/PID/status) before and after, and
the growth per logged event.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common.messages import Say
from tests.procs import Processes
from tests.raw_peer import send_queued
from tests.test_lab2 import Room, raw_member, wait_for_seq


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def main() -> None:
    members = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp, Processes() as processes:
        room = Room(Path(tmp), processes)
        room.add_setting(f"MAX_CLIENTS={members + 10}")
        room.add_setting(f"MAX_CLIENTS_PER_ADDRESS={members + 10}")
        server = room.start_server()
        peers = [raw_member(room, f"chatty_{i:03}")[:2] for i in range(members)]
        seq = members
        wait_for_seq(server, seq)
        before = resident_kib(server.process.pid)
        for sock, session in peers:
            for line in range(20):         # one second's budget at once
                session.send(Say(f"{line:02} " + "y" * 987))
            send_queued(sock, session)
        events = 20 * members
        wait_for_seq(server, seq + events)
        after = resident_kib(server.process.pid)
        print(f"members {members}, events logged {events}: VmRSS {before} KiB -> {after} KiB, "
              f"{(after - before) * 1024 / events:.0f} bytes per 990-byte event")
        per_hour = (after - before) * 1024 / events * 20 * 3600
        print(f"one member at its budget (20 lines/s) adds {per_hour / 2**20:.0f} "
              f"MiB an hour; {members} members {per_hour * members / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
