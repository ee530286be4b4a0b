"""What does encryption cost the Lab 1 chat? Messages per second and round-trip
times of ChatMessages echoed over loopback TCP, through the encrypted session
and through a plain socket, measured in the same run.

Both carry the same messages in the same records (common/framing.py); the
only difference is the Noise session: ChaCha20-Poly1305 on every record, in
both directions. The echo end runs in its own process, as a real server
would. Plain and encrypted runs alternate, ROUNDS times each, and the table
shows the median of each column, so a burst of other work on the machine
does not decide the ratio.

    python bench/lab1_throughput.py [--messages N] [--round-trips N] [--text-bytes N]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

# Run from a clone without installing: make the kit's packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import noise  # noqa: E402
from common.framing import RecordDecoder, encode_record  # noqa: E402
from common.messages import ChatMessage, decode, encode  # noqa: E402
from common.session import SecureSession  # noqa: E402

RECV_BYTES = 65536
ROUNDS = 5


class PlainLink:
    """Messages in records, in the clear: the baseline."""

    def __init__(self) -> None:
        self.decoder = RecordDecoder()
        self.outgoing = bytearray()

    def send(self, message: ChatMessage) -> None:
        self.outgoing += encode_record(encode(message))

    def receive(self, data: bytes) -> list:
        return [decode(body) for body in self.decoder.feed(data)]


def echo(listener: socket.socket, psk: bytes | None, private_key: bytes | None) -> None:
    """The far end, in its own process: accept one connection and send every
    message straight back until the peer closes. With keys, it runs a session."""
    link = PlainLink() if psk is None else SecureSession.server(psk, private_key)
    sock, _addr = listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := sock.recv(RECV_BYTES):
        for message in link.receive(data):
            link.send(message)
        if link.outgoing:
            sock.sendall(link.outgoing)
            link.outgoing.clear()
    sock.close()


def connected(secure: bool) -> tuple[socket.socket, object, multiprocessing.Process]:
    """A loopback TCP connection to a fresh echo process, and our end's link."""
    private_key, public_key = noise.generate_keypair()
    psk = os.urandom(32) if secure else None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        far_end = multiprocessing.Process(target=echo, args=(listener, psk, private_key))
        far_end.start()
        sock = socket.create_connection(listener.getsockname())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_link = SecureSession.client(psk, public_key) if secure else PlainLink()
    while secure and not client_link.established:
        sock.sendall(client_link.outgoing)
        client_link.outgoing.clear()
        client_link.receive(sock.recv(RECV_BYTES))
    return sock, client_link, far_end


def wait_for(sock: socket.socket, link, count: int) -> None:
    received = 0
    while received < count:
        received += len(link.receive(sock.recv(RECV_BYTES)))


def measure(secure: bool, messages: int, round_trips: int, text: str) -> tuple:
    """Return (messages/s, RTT p50 in us, RTT p99 in us) for one kind of link."""
    sock, client_link, far_end = connected(secure)
    message = ChatMessage("alice", text)
    # Throughput: seal every message (timed too), then a writer thread pours
    # them in while we read the echoes, so neither end waits for the other.
    start = time.perf_counter()
    for _ in range(messages):
        client_link.send(message)
    payload = bytes(client_link.outgoing)
    client_link.outgoing.clear()
    writer = threading.Thread(target=sock.sendall, args=(payload,))
    writer.start()
    wait_for(sock, client_link, messages)
    per_second = messages / (time.perf_counter() - start)
    writer.join()
    # Round trips: one message at a time, each waiting for its echo.
    times = []
    for _ in range(round_trips):
        start = time.perf_counter()
        client_link.send(message)
        sock.sendall(client_link.outgoing)
        client_link.outgoing.clear()
        wait_for(sock, client_link, 1)
        times.append((time.perf_counter() - start) * 1e6)
    sock.close()
    far_end.join()
    percentiles = statistics.quantiles(times, n=100)
    return per_second, percentiles[49], percentiles[98]


def measure_all(messages: int, round_trips: int, text_bytes: int, rounds: int = ROUNDS) -> dict:
    """Plain and encrypted runs, alternating ``rounds`` times; the median of each
    column: {"plain": (messages/s, p50 us, p99 us), "encrypted": (...)}."""
    text = "x" * text_bytes
    runs = {False: [], True: []}
    for _round in range(rounds):
        for secure in runs:
            runs[secure].append(measure(secure, messages, round_trips, text))
    plain, secure = (tuple(statistics.median(column) for column in zip(*runs[kind]))
                     for kind in (False, True))
    return {"plain": plain, "encrypted": secure}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000,
                        help="messages for the throughput run")
    parser.add_argument("--round-trips", type=int, default=2000,
                        help="round trips timed one by one")
    parser.add_argument("--text-bytes", type=int, default=100, help="length of each chat line")
    args = parser.parse_args()
    result = measure_all(args.messages, args.round_trips, args.text_bytes)
    plain, secure = result["plain"], result["encrypted"]
    print(f"Lab 1: {args.messages} messages of {args.text_bytes} bytes echoed over loopback TCP; "
          f"{args.round_trips} round trips timed one by one; median of {ROUNDS} rounds")
    print(f"{'':22}{'messages/s':>12}{'RTT p50 (us)':>15}{'RTT p99 (us)':>15}")
    for label, row in (("plain socket", plain), ("encrypted session", secure)):
        print(f"{label:22}{row[0]:12.0f}{row[1]:15.1f}{row[2]:15.1f}")
    ratios = [secure[index] / plain[index] for index in range(3)]
    print(f"{'encrypted / plain':22}{ratios[0]:12.2f}{ratios[1]:15.2f}{ratios[2]:15.2f}")


if __name__ == "__main__":
    main()
