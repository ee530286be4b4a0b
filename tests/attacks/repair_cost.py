"""Measure the Lab 2 server's CPU while members pull the log by repairs, each
within its own budget (1000 events a second, 20 requests). Every member may
do this, and one address may hold any number of members (up to MAX_CLIENTS),
so the cost grows with the members one attacker registers. Run from the
kit's folder:

    .venv/bin/python -m tests.attacks.repair_cost [MEMBERS ...]

For each count (default 0 10 40) it logs that many members in from
127.0.0.2 against a log of 1000 lines of 990 bytes, has each ask for the
whole log at every room datagram (4 a second) for 20 datagrams, reads every
answer, and prints the server's CPU seconds (utime + stime, /proc/PID/stat)
per second of wall time.
"""
from __future__ import annotations

import selectors
import sys
import tempfile
import time
from pathlib import Path

from common import net
from common.messages import History, RepairRequest
from tests.attacks.handshake_churn import cpu_seconds
from tests.procs import Processes
from tests.raw_peer import send_queued
from tests.test_lab2 import Room, raw_member, wait_for_seq


def measure(members: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Processes() as processes:
        room = Room(Path(tmp), processes)
        server = room.start_server()
        for i in range(1000):
            server.send_line(f"{i:04} " + "x" * 985)
        wait_for_seq(server, 1000)
        peers = [raw_member(room, f"puller_{i:03}")[:2] for i in range(members)]
        selector = selectors.DefaultSelector()
        for sock, session in peers:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, session)
        clock = net.broadcast_receiver(room.client_broadcast_port)
        selector.register(clock, selectors.EVENT_READ, None)
        pulled, ticks = 0, 0
        before, started = cpu_seconds(server.process.pid), time.monotonic()
        while ticks < 20:
            for key, _mask in selector.select(5):
                if key.data is None:           # a room datagram: the pace
                    clock.recvfrom(4096)
                    ticks += 1
                    for sock, session in peers:
                        session.send(RepairRequest(0))
                        session.send(RepairRequest(0))
                        sock.setblocking(True)
                        send_queued(sock, session)
                        sock.setblocking(False)
                    continue
                try:
                    data = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                pulled += sum(len(m.events) for m in key.data.receive(data) if isinstance(m, History))
        elapsed, used = time.monotonic() - started, cpu_seconds(server.process.pid) - before
        print(f"{members:3} members pulling: {pulled / elapsed:8.0f} events/s sent, "
              f"server CPU {used / elapsed:5.0%} of one core")


def main() -> None:
    for members in map(int, sys.argv[1:] or ["0", "10", "40"]):
        measure(members)


if __name__ == "__main__":
    main()
