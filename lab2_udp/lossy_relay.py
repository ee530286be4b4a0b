"""A bad network on purpose: relay room datagrams, losing some on the way.

Run it:  python -m lab2_udp.lossy_relay --listen-port 5061 --forward-port 5062 --drop 0.2

The server broadcasts to LISTEN_PORT; this relay hears each datagram there
and broadcasts it again to FORWARD_PORT, where the clients listen. It sends
the room the way the server does (common/net.py, open_room_channel): where
loopback cannot broadcast (macOS), both multicast to the same loopback group,
so the relay hears the server and the clients hear the relay. On the
way it drops some, sends some twice, and delays others so that they arrive
out of order, as a busy wireless network might. The choices come from a
seeded random generator, so a failing run can be replayed exactly.

The clients must still show the same transcript: that is what the sequence
numbers, the repair requests and the heartbeat are for.
"""
from __future__ import annotations

import argparse
import heapq
import random
import selectors
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping

from common import net

COUNT_NAMES = ("received", "dropped", "duplicated", "reordered")


class FaultPlan:
    """Decides each datagram's fate: how many copies go out, and after what delay."""

    def __init__(self, *, drop: float, duplicate: float, reorder: float, delay_ms: float, seed: int) -> None:
        self.drop, self.duplicate, self.reorder, self.delay_ms = drop, duplicate, reorder, delay_ms
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()

    def delays_seconds(self) -> list[float]:
        """The delay of every copy to send ([] for a dropped datagram)."""
        self.counts["received"] += 1
        if self.random.random() < self.drop:
            self.counts["dropped"] += 1
            return []
        copies = 2 if self.random.random() < self.duplicate else 1
        self.counts["duplicated"] += copies - 1
        delays = []
        for _ in range(copies):
            delay = self.random.uniform(0, self.delay_ms)
            if self.random.random() < self.reorder:   # held back: later datagrams overtake it
                delay += 3 * self.delay_ms
                self.counts["reordered"] += 1
            delays.append(delay / 1000)
        return delays


class LossyRelay:
    """Hear datagrams on one port, rebroadcast them to another through a FaultPlan
    (or hear and send them on a multicast group, given one or chosen as the server chooses)."""

    def __init__(self, plan: FaultPlan, listen_port: int, forward_addr: str, forward_port: int,
                 group: str = "") -> None:
        self.plan = plan
        self.inbound = net.broadcast_receiver(listen_port)
        self.channel = net.open_room_channel("127.0.0.1", forward_addr, forward_port, group)
        if self.channel.group:   # the server, on this machine, multicasts to the same group
            net.join_group(self.inbound, self.channel.group, "127.0.0.1")
        self.outbound, self.forward_to = self.channel.sock, self.channel.address
        self.due: list[tuple[float, int, bytes]] = []   # a heap of (send at, arrival number, datagram)
        self.stopping = threading.Event()

    def run(self) -> None:
        """Relay until stop() is called."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.inbound, selectors.EVENT_READ)
            while not self.stopping.is_set():
                # Sleep in select() until a datagram arrives or the next one is due,
                # and at most 0.1 s, so stop() is noticed promptly.
                timeout = 0.1 if not self.due else max(0.0, min(0.1, self.due[0][0] - time.monotonic()))
                if selector.select(timeout):
                    self._receive_all()
                self._send_due()
        self.inbound.close()
        self.outbound.close()

    def stop(self) -> None:
        self.stopping.set()

    def _receive_all(self) -> None:
        now = time.monotonic()
        while True:
            try:
                datagram = self.inbound.recv(net.MAX_DATAGRAM_RECV_BYTES)
            except BlockingIOError:
                return
            for delay in self.plan.delays_seconds():
                heapq.heappush(self.due, (now + delay, self.plan.counts["received"], datagram))

    def _send_due(self) -> None:
        now = time.monotonic()
        while self.due and self.due[0][0] <= now:
            _, _, datagram = heapq.heappop(self.due)
            try:
                self.outbound.sendto(datagram, self.forward_to)
            except OSError:
                self.plan.counts["send errors"] += 1   # a real network loses packets too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab2_udp.lossy_relay", description=__doc__.split("\n")[0])
    parser.add_argument("--listen-port", type=int, required=True, help="the port the server broadcasts to")
    parser.add_argument("--forward-port", type=int, required=True, help="the port the clients listen on")
    parser.add_argument("--forward-addr", default="127.255.255.255", help="where to rebroadcast (default: %(default)s)")
    parser.add_argument("--multicast", default="", metavar="GROUP",
                        help="hear and send on this multicast group, as the server's --multicast")
    parser.add_argument("--drop", type=float, default=0.2, help="share of datagrams lost (default: %(default)s)")
    parser.add_argument("--duplicate", type=float, default=0.05, help="share sent twice (default: %(default)s)")
    parser.add_argument("--reorder", type=float, default=0.1, help="share held back (default: %(default)s)")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="random delay, 0 to this ms (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="the random seed, to replay a run (default: %(default)s)")
    args = parser.parse_args(argv)
    plan = FaultPlan(drop=args.drop, duplicate=args.duplicate, reorder=args.reorder,
                     delay_ms=args.delay_ms, seed=args.seed)
    relay = LossyRelay(plan, args.listen_port, args.forward_addr, args.forward_port, args.multicast)
    # Ctrl-C or SIGTERM is how a person stops the relay: it finishes its round and reports.
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda _number, _frame: relay.stop())
    print(relay.channel.choice, file=sys.stderr)   # broadcast, or multicast where loopback cannot broadcast
    print(f"relaying {args.listen_port} -> {net.describe(relay.forward_to)}; "
          "Ctrl-C stops it and prints what it did", file=sys.stderr, flush=True)
    relay.run()
    print(describe_counts(plan.counts), file=sys.stderr, flush=True)
    return 0


def describe_counts(counts: Mapping[str, int]) -> str:
    """"received 40, dropped 8, duplicated 2, reordered 4": what the network did."""
    names = [*COUNT_NAMES, *sorted(set(counts) - set(COUNT_NAMES))]
    return ", ".join(f"{name} {counts.get(name, 0)}" for name in names)


if __name__ == "__main__":
    sys.exit(main())
