"""After a stranger's replay has made a client take it for the server (see
test_a_stranger_replaying_a_genuine_datagram_does_not_become_the_server_for_a_new_client),
a member who knows the room key, sending from that same address, gets every
forgery checked in full: the Ed25519 verify that DatagramGate exists to spare
the receivers. Run from the kit's folder:

    .venv/bin/python -m tests.attacks.gate_hijack_cost [FORGERIES]

It hijacks bob's gate from 127.0.0.2, then sends FORGERIES (default 5000)
datagrams sealed with the room key and a wrong signing key, first from
127.0.0.3 (an address bob does not trust: ignored unopened), then from
127.0.0.2 (the address bob now trusts), and prints bob's CPU time
(utime + stime, /proc/PID/stat) per forgery in each case.
"""
from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import net
from common.framing import DatagramSealer
from common.messages import RoomBatch, RoomEvent, encode
from tests.attacks.handshake_churn import cpu_seconds
from tests.procs import Processes
from tests.test_lab2 import BROADCAST, Room, raw_member, wait_for_seq


def sender_from(address: str):
    sock = net.broadcast_sender()
    sock.bind((address, 0))
    sock.setblocking(True)
    return sock


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp, Processes() as processes:
        room = Room(Path(tmp), processes)
        room.start_server()
        _sock, _session, room_key = raw_member(room, "mallory")
        port = room.client_broadcast_port
        listener = net.broadcast_receiver(port)
        listener.setblocking(True)
        genuine, _ = listener.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
        listener.close()
        trusted, untrusted = sender_from("127.0.0.2"), sender_from("127.0.0.3")
        stop = threading.Event()

        def replay() -> None:
            for _ in range(2_000_000):
                if stop.is_set():
                    return
                trusted.sendto(genuine, (BROADCAST, port))

        flood = threading.Thread(target=replay, daemon=True)
        flood.start()
        bob = room.join("bob")
        wait_for_seq(bob, 2)
        stop.set()
        flood.join()
        forger = DatagramSealer(Ed25519PrivateKey.generate())
        forger.set_room_key(room_key.epoch, room_key.key)
        pid = bob.process.pid
        for label, sender in (("from 127.0.0.3 (untrusted)", untrusted), ("from 127.0.0.2 (hijacked)", trusted)):
            forgeries = [forger.seal(encode(RoomBatch((RoomEvent(99, "say", "server", "forged"),), 99)))
                         for _ in range(count)]
            before = cpu_seconds(pid)
            for start in range(0, count, 40):  # 40 at a time, so the kernel drops none of them
                for datagram in forgeries[start:start + 40]:
                    sender.sendto(datagram, (BROADCAST, port))
                answers = sum(line.startswith("transcript ") for line in bob.stderr_lines)
                bob.send_line("/hash")        # bob's loop has turned once it answers
                bob.wait_for_stderr(r"^transcript ", count=answers + 1)
            used = cpu_seconds(pid) - before
            print(f"{count} forgeries {label}: bob's CPU {used:.2f} s, {used / count * 1e6:.0f} us each")
        bob.send_line("/quit")
        bob.wait_exit()
        print(next(line for line in bob.stderr_lines if line.startswith("datagrams:")))


if __name__ == "__main__":
    main()
