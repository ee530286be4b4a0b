"""Measure what a stranger without the key costs the Lab 2 server by opening
connections and sending one forged first handshake record each. The server
reads the record, does the X25519 of ``-> psk, e, es`` and only then finds
the tag wrong. One address may make it do that 4 times a second, after a
burst of 16 (common/admission.py); past that each connection is accepted and
closed at once, before any key exchange. Run from the kit's folder:

    .venv/bin/python -m tests.attacks.handshake_churn [ATTEMPTS]

It prints the server's CPU time (utime + stime from /proc/PID/stat) per
attempt, the attempts per second one stranger thread achieved, and the room
datagrams an honest listener heard during the churn against the heartbeats
(4 a second) a silent room sends.
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import net
from tests.procs import Processes
from tests.test_lab2 import Room


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    attempts = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp, Processes() as processes:
        room = Room(Path(tmp), processes)
        server = room.start_server()
        pid = server.process.pid
        heard = [0]
        listener = net.broadcast_receiver(room.client_broadcast_port)
        listener.settimeout(0.5)
        done = threading.Event()

        def listen() -> None:
            while not done.is_set():
                try:
                    listener.recvfrom(4096)
                    heard[0] += 1
                except TimeoutError:
                    pass

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        forged = (48).to_bytes(2, "big") + os.urandom(48)
        before, started = cpu_seconds(pid), time.monotonic()
        heard[0] = 0
        for _ in range(attempts):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", room.port))
            try:
                sock.sendall(forged)
                sock.recv(16)           # the server closes without a word
            except (BrokenPipeError, ConnectionResetError):   # refused: closed before it read our record
                pass
            sock.close()
        elapsed, used = time.monotonic() - started, cpu_seconds(pid) - before
        done.set()
        thread.join()
        print(f"{attempts} forged handshakes from one address in {elapsed:.1f} s "
              f"({attempts / elapsed:.0f}/s): server CPU {used:.2f} s, {used / attempts * 1e6:.0f} us each, "
              f"{used / elapsed:.0%} of one core")
        print(f"room datagrams heard meanwhile: {heard[0]} (a silent room sends {elapsed * 4:.0f})")


if __name__ == "__main__":
    main()
