"""Measure how long the Lab 2 server's loop stands still while it drops
members that stopped reading (net.send_last_words_and_close blocks up to 1 s
per peer). Run from the kit's folder:

    .venv/bin/python -m tests.attacks.freeze_on_drop [SILENT_MEMBERS]

It starts the real server on loopback, logs SILENT_MEMBERS (default 4) in
from 127.0.0.2 with a tiny receive window, has them ask for the whole log 4
times a second without reading, and prints the longest silence between two
room datagrams (the server sends a heartbeat every 0.25 s), before and while
they are dropped. A control run with 0 silent members shows the baseline.
"""
from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

from common import net
from common.messages import RepairRequest
from tests.procs import Processes
from tests.raw_peer import send_queued
from tests.test_lab2 import Room, wait_for_seq
from tests.test_lab2_attacks import member_that_will_not_read


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    with tempfile.TemporaryDirectory() as tmp, Processes() as processes:
        room = Room(Path(tmp), processes)
        server = room.start_server()
        for i in range(500):
            server.send_line(f"{i:03} " + "x" * 990)
        wait_for_seq(server, 500)
        silent = [member_that_will_not_read("127.0.0.2", room, f"silent_{i}") for i in range(count)]
        clock = net.broadcast_receiver(room.client_broadcast_port)
        clock.setblocking(True)
        clock.settimeout(20)
        gaps, last = [], time.monotonic()
        for _ in range(120):               # 30 s of heartbeats at most
            clock.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            for sock, session in silent:
                session.send(RepairRequest(0))
                try:
                    send_queued(sock, session)
                except OSError:
                    pass
            if sum(bool(re.search(r"stopped reading", line)) for line in server.stderr_lines) == count \
                    and len(gaps) > 40:
                break
        drops = sum(bool(re.search(r"stopped reading", line)) for line in server.stderr_lines)
        print(f"silent members: {count}, dropped for not reading: {drops}, datagrams timed: {len(gaps)}")
        print(f"longest silence between two room datagrams: {max(gaps[1:]):.2f} s "
              f"(heartbeat interval 0.25 s)")


if __name__ == "__main__":
    main()
