"""How fast does the Lab 2 room fan out, and what do encryption and ordering
cost? The real server against a raw UDP broadcast relay, measured in the same run.

Two systems carry the same chat lines from N clients to all N clients:

- kit: the real ``python -m lab2_udp.server`` as a process. Each simulated
  client has its own encrypted TCP session (handshake, Register, then Say
  messages), its own UDP socket on the broadcast port, its own
  DatagramOpener and its own Transcript, exactly like lab2_udp/client.py:
  every receiver decrypts *and* checks the Ed25519 signature of every
  datagram, delivers events strictly in order and asks for repairs over
  TCP when it sees a gap.
- raw: a relay written below, run as a process too: it reads plain
  newline-ended lines over TCP and sends each one, as it is, in one UDP
  datagram to the broadcast address. Its receivers just recv(): no crypto,
  no ordering, no repair. It shows what the loopback network and Python's
  socket calls cost by themselves.

A signature check costs about 0.1 ms here, far more than a recv(), so the
kit can only keep up because the server packs every event logged in one
round of its loop into one datagram: one seal and one signature then cover
many events, and the busier the room, the fuller the datagrams.

Every line carries its send time; a receiver takes the latency when the
line is delivered (for the kit: in order, after any repair). p50/p99 are
over all (receiver, message) pairs; "delivered" counts those pairs against
N receivers x messages sent. All clients of a run share this process's one
selectors loop (one core); the server or the relay has the other core. So
"deliveries/s" is what N receivers cost *together*: on a real network each
has its own CPU. "lines/datagram" shows the batching; "repairs" counts the
RepairRequests the kit's receivers sent after losing datagrams.

Workloads:
- throughput: each of N clients sends its messages as fast as the loop
  allows, with at most WINDOW_PER_CLIENT of its own in flight (sent, not
  yet heard back), so queues stay bounded and latency means something.
- paced: 50 clients each send 50 messages, one every 100 ms (and one every
  20 ms), each starting at a random point of the first period.

    python bench/lab2_fanout.py [--clients 10,50,200] [--quick]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run from a clone without installing: make the kit's packages importable.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import net  # noqa: E402
from common.config import create_env_file, load_settings  # noqa: E402
from common.errors import ProtocolError  # noqa: E402
from common.framing import DatagramOpener  # noqa: E402
from common.messages import (  # noqa: E402
    ErrorNotice, Goodbye, History, IgnoreList, LoginAccepted, LoginRejected, Register,
    RepairRequest, RoomKey, Say,
)
from common.session import SecureSession  # noqa: E402
from common.transcript import Transcript, read_room_datagram  # noqa: E402

# --- Settings ------------------------------------------------------------------------

HOST, BROADCAST_ADDR = "127.0.0.1", "127.255.255.255"
CLIENT_COUNTS = (10, 50, 200)
PAIRS_PER_THROUGHPUT_RUN = {False: 200_000, True: 40_000}   # by --quick
MIN_MESSAGES_PER_CLIENT = 5
WINDOW_PER_CLIENT = 4          # own messages in flight in the throughput runs
PACED_CLIENTS, PACED_MESSAGES = 50, 50
PACED_INTERVALS_MS = (100, 20)
LOGINS_AT_ONCE = 16            # the server's listen backlog: connect in waves of this many
TICK_SECONDS = 0.05            # repair checks, as lab2_udp/client.py does them
LOST_AFTER_SECONDS = 2.0       # a raw message not heard back by then is lost: free its slot
QUIET_SECONDS = 1.0            # raw: no more deliveries for this long means the run is over
SETUP_DEADLINE_SECONDS = 60.0
RUN_DEADLINE_SECONDS = 60.0
DRAIN_DEADLINE_SECONDS = 20.0  # kit: time for the last repairs after the last send
PASSWORD = "bench password 1"
# A fast room: no rate limit in the way, room for 200 members, and a password
# hash cheap enough that 200 registrations take a moment, not minutes.
SERVER_SETTINGS = ("MAX_MESSAGES_PER_SECOND=1000000\nMAX_CLIENTS=1000\n"
                   "ARGON2_MEMORY_KIB=8\nARGON2_ITERATIONS=1\n")
# Settings a developer may have exported; the bench's own .env must win.
SETTING_VARIABLES = ("CHAT_PSK", "SERVER_PRIVATE_KEY", "SERVER_PUBLIC_KEY", "SERVER_HOST",
                     "LAB2_PORT", "BROADCAST_ADDR", "BROADCAST_PORT", "DB_PATH",
                     "MAX_CLIENTS", "MAX_MESSAGES_PER_SECOND", "ARGON2_MEMORY_KIB",
                     "ARGON2_ITERATIONS")


# --- The raw relay (the baseline's server, run as a subprocess) -----------------------

def serve_raw_relay(broadcast_port: int) -> None:
    """Re-broadcast every line read from any TCP client as one UDP datagram,
    until stdin closes."""
    selector = selectors.DefaultSelector()
    listener = net.listening_socket(HOST, 0)
    sender = net.broadcast_sender()
    pending: dict[socket.socket, bytearray] = {}

    def on_connect(_mask: int) -> None:
        sock, _addr = net.accept(listener)
        pending[sock] = bytearray()
        sock.send(b"\n")   # a greeting: the client knows it is accepted, not just queued
        selector.register(sock, selectors.EVENT_READ, lambda mask: on_readable(sock))

    def on_readable(sock: socket.socket) -> None:
        try:
            data = net.receive(sock)
        except OSError:
            data = b""
        if not data:
            selector.unregister(sock)
            del pending[sock]
            sock.close()
            return
        buffer = pending[sock]
        buffer += data
        *lines, rest = buffer.split(b"\n")
        pending[sock] = rest
        for line in lines:
            try:
                sender.sendto(line, (BROADCAST_ADDR, broadcast_port))
            except OSError:
                pass  # a raw relay promises nothing: the line is lost

    stopping = []
    selector.register(listener, selectors.EVENT_READ, on_connect)
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ,
                      lambda mask: stopping.append(not os.read(sys.stdin.fileno(), 4096)))
    print(f"listening on {net.describe(listener.getsockname())}", file=sys.stderr, flush=True)
    while not any(stopping):
        for key, mask in selector.select():
            key.data(mask)


# --- Processes and ports ----------------------------------------------------------------

class ServerProcess:
    """A server as a child process: stdin kept open, stderr collected line by line."""

    def __init__(self, command: list[str]) -> None:
        env = {key: value for key, value in os.environ.items() if key not in SETTING_VARIABLES}
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()

    def _collect(self) -> None:
        for raw in self.process.stderr:
            with self.changed:
                self.lines.append(raw.decode("utf-8", errors="replace").rstrip())
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, pattern: str, after_line: int = 0,
                 timeout: float = SETUP_DEADLINE_SECONDS) -> re.Match:
        def found() -> re.Match | None:
            matches = map(re.compile(pattern).search, self.lines[after_line:])
            return next(filter(None, matches), None)
        with self.changed:
            self.changed.wait_for(lambda: found() or self.process.poll() is not None, timeout)
            match = found()
        if not match:
            raise RuntimeError(f"server never said /{pattern}/:\n" + "\n".join(self.lines[-20:]))
        return match

    def send_line(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(5)
        self.process.stdin.close()
        self.process.stderr.close()


def free_udp_port() -> int:
    """A UDP port nobody uses now (the OS picked it and we gave it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# --- The measurements every client shares ------------------------------------------------

class Tally:
    """What the receivers of one run heard: latencies and who got what."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.datagrams = 0        # heard by a receiver (kit: opened, one signature check each)
        self.datagram_lines = 0   # the lines those datagrams carried
        self.repairs = 0          # kit: RepairRequests sent
        self.distinct: set[tuple[int, int]] = set()
        self.first_send_ns = 0
        self.last_delivery_ns = 0
        self.sent = 0

    def heard(self, receiver, text: str, now_ns: int) -> None:
        """One delivered line "SENDER NUMBER SEND_NS" at one receiver."""
        sender, number, sent_ns = map(int, text.split())
        self.latencies_ns.append(now_ns - sent_ns)
        self.distinct.add((sender, number))
        self.last_delivery_ns = now_ns
        if sender == receiver.index:
            receiver.in_flight.pop(number, None)


class BenchClient:
    """What both kinds of client share: the sockets, what they sent, what is in flight."""

    def __init__(self, index: int, tally: Tally, selector: selectors.BaseSelector,
                 server: tuple[str, int], broadcast_port: int) -> None:
        self.index = index
        self.tally = tally
        self.selector = selector
        self.sent = 0
        self.in_flight: dict[int, int] = {}   # message number -> send time (ns)
        self.failed: str | None = None
        self.udp = net.broadcast_receiver(broadcast_port)
        selector.register(self.udp, selectors.EVENT_READ, self.on_datagrams)
        self.sock = net.start_connect(*server)
        selector.register(self.sock, selectors.EVENT_WRITE, self.on_connected)

    def next_line(self) -> str:
        now_ns = time.perf_counter_ns()
        self.tally.first_send_ns = self.tally.first_send_ns or now_ns
        self.tally.sent += 1
        self.in_flight[self.sent] = now_ns
        self.sent += 1
        return f"{self.index} {self.sent - 1} {now_ns}"

    def on_connected(self, _mask: int) -> None:
        try:
            net.finish_connect(self.sock)
        except OSError as error:
            self.failed = f"connect: {error}"
            self.selector.unregister(self.sock)
            return
        self.selector.modify(self.sock, selectors.EVENT_READ, self.on_readable)
        self.flush()

    def flush(self) -> None:
        try:
            net.send_pending(self.selector, self.sock, self.outgoing)
        except OSError as error:
            self.fail(f"send: {error}")

    def fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            self.selector.unregister(self.sock)

    def close(self) -> None:
        for sock in (self.sock, self.udp):
            if sock.fileno() != -1 and sock.fileno() in self.selector.get_map():
                self.selector.unregister(sock)
            sock.close()


class KitClient(BenchClient):
    """One member of the real room, doing everything lab2_udp/client.py does."""

    def __init__(self, settings, *args) -> None:
        self.session = SecureSession.client(settings.psk, settings.server_public_key)
        self.outgoing = self.session.outgoing
        self.opener: DatagramOpener | None = None
        self.transcript = Transcript()
        self.logged_in = False
        self.errors: list[str] = []
        super().__init__(*args)
        self.handlers = {
            LoginAccepted: self.handle_login_accepted, RoomKey: self.handle_room_key,
            IgnoreList: lambda message: None, History: self.handle_history,
            ErrorNotice: lambda message: self.errors.append(message.text),
            LoginRejected: lambda message: self.fail(f"login rejected: {message.reason}"),
            Goodbye: lambda message: self.fail(f"goodbye: {message.reason}"),
        }

    @property
    def ready(self) -> bool:
        return self.logged_in and self.opener is not None

    def on_readable(self, _mask: int) -> None:
        try:
            data = net.receive(self.sock)
            if not data:
                return self.fail("the server closed the connection")
            was_established = self.session.established
            for message in self.session.receive(data):
                self.handlers[type(message)](message)
            if self.session.established and not was_established:
                self.session.send(Register(f"client{self.index}", PASSWORD))
            self.flush()
        except (ProtocolError, OSError, KeyError) as error:
            self.fail(f"connection lost: {error!r}")

    def handle_login_accepted(self, _message: LoginAccepted) -> None:
        self.logged_in = True

    def handle_room_key(self, message: RoomKey) -> None:
        if self.opener is None:
            self.opener = DatagramOpener(message.signing_key)
        self.opener.add_room_key(message.epoch, message.key)

    def handle_history(self, message: History) -> None:
        self.deliver(self.transcript.receive(message.events, message.latest_seq))

    def on_datagrams(self, _mask: int) -> None:
        while True:
            try:
                datagram = self.udp.recv(net.MAX_DATAGRAM_RECV_BYTES)
            except BlockingIOError:
                return
            if self.opener is None:
                continue   # not logged in yet: we could not read it anyway
            try:
                batch = read_room_datagram(self.opener, datagram)
            except ProtocolError:
                continue   # not for us, or damaged: the real client drops it too
            self.tally.datagrams += 1
            self.tally.datagram_lines += len(batch.events)
            self.deliver(self.transcript.receive(batch.events, batch.latest_seq))

    def deliver(self, events) -> None:
        now_ns = time.perf_counter_ns()
        for event in events:
            if event.kind == "say":
                self.tally.heard(self, event.text, now_ns)

    def send_message(self) -> None:
        self.session.send(Say(self.next_line()))

    def tick(self, now: float) -> None:
        if self.ready and self.failed is None:
            after_seq = self.transcript.repair_due(now)
            if after_seq is not None:
                self.tally.repairs += 1
                self.session.send(RepairRequest(after_seq))
                self.flush()


class RawClient(BenchClient):
    """A client of the raw relay: plain lines up, plain datagrams down."""

    def __init__(self, *args) -> None:
        self.outgoing = bytearray()
        self.greeted = False   # the relay has accepted us
        self.order = hashlib.sha256()   # what it heard, in the order it heard it
        super().__init__(*args)

    @property
    def ready(self) -> bool:
        return self.greeted

    def on_readable(self, _mask: int) -> None:
        try:
            self.greeted = True
            if not net.receive(self.sock):
                self.fail("the relay closed the connection")
        except OSError as error:
            self.fail(f"connection lost: {error}")

    def on_datagrams(self, _mask: int) -> None:
        now_ns = time.perf_counter_ns()
        while True:
            try:
                datagram = self.udp.recv(net.MAX_DATAGRAM_RECV_BYTES)
            except BlockingIOError:
                return
            self.tally.datagrams += 1
            self.tally.datagram_lines += 1
            self.order.update(datagram + b"\n")
            self.tally.heard(self, datagram.decode(), now_ns)

    def send_message(self) -> None:
        self.outgoing += self.next_line().encode() + b"\n"

    def tick(self, now: float) -> None:
        """No repairs: a lost line is gone. Only free its slot in the window."""
        stale_ns = time.perf_counter_ns() - int(LOST_AFTER_SECONDS * 1e9)
        for number in [n for n, sent_ns in self.in_flight.items() if sent_ns < stale_ns]:
            del self.in_flight[number]


# --- One run: a server, N clients, one workload ------------------------------------------

def start_kit_server(workdir: Path):
    """The real Lab 2 server, with a fresh .env and database; returns the
    process, a function that makes one client, and the room's settings."""
    env_file = workdir / f"{time.monotonic_ns()}.env"
    create_env_file(env_file)
    with open(env_file, "a", encoding="utf-8") as settings_file:
        settings_file.write(SERVER_SETTINGS)
    broadcast_port = free_udp_port()
    server = ServerProcess([
        sys.executable, "-m", "lab2_udp.server", "--headless", "--host", HOST, "--port", "0",
        "--broadcast-addr", BROADCAST_ADDR, "--broadcast-port", str(broadcast_port),
        "--env", str(env_file), "--db", str(env_file.with_suffix(".db"))])
    port = int(server.wait_for(r"^listening on 127\.0\.0\.1:(\d+)").group(1))
    settings = load_settings(env_file, create=False)
    return server, lambda *args: KitClient(settings, *args, (HOST, port), broadcast_port)


def start_raw_relay(_workdir: Path):
    broadcast_port = free_udp_port()
    server = ServerProcess([sys.executable, __file__, "--raw-relay", str(broadcast_port)])
    port = int(server.wait_for(r"^listening on 127\.0\.0\.1:(\d+)").group(1))
    return server, lambda *args: RawClient(*args, (HOST, port), broadcast_port)


def spin(selector: selectors.BaseSelector, clients: list, done: Callable[[], bool],
         deadline: float, act: Callable[[float], float] | None = None) -> bool:
    """Run the loop until done() or the deadline (then return False). act(now)
    runs every round and returns how soon it wants to run again."""
    next_tick = time.monotonic()
    while not done():
        now = time.monotonic()
        if now > deadline:
            return False
        wait_seconds = min(TICK_SECONDS, act(now)) if act else TICK_SECONDS
        for key, mask in selector.select(max(0.0, min(wait_seconds, next_tick - now))):
            key.data(mask)
        now = time.monotonic()
        if now >= next_tick:
            for client in clients:
                client.tick(now)
            next_tick = now + TICK_SECONDS
        failed = [client.failed for client in clients if client.failed]
        if failed:
            raise RuntimeError(f"{len(failed)} client(s) failed, first: {failed[0]}")
    return True


class Run:
    """One system, N clients: set up, drive a workload, measure, clean up."""

    def __init__(self, system: str, count: int, workdir: Path) -> None:
        self.system, self.count = system, count
        self.tally = Tally()
        self.selector = selectors.DefaultSelector()
        self.clients: list = []
        start = start_kit_server if system == "kit" else start_raw_relay
        self.server, self.make_client = start(workdir)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_exc_info) -> None:
        self.server.stop()   # first, so it does not rotate keys for 200 leavers
        for client in self.clients:
            client.close()
        self.selector.close()

    def connect(self) -> float:
        """Bring every client in, LOGINS_AT_ONCE at a time; return the seconds it took."""
        started = time.monotonic()

        def act(_now: float) -> float:
            waiting = sum(not client.ready for client in self.clients)
            while len(self.clients) < self.count and waiting < LOGINS_AT_ONCE:
                self.clients.append(self.make_client(len(self.clients), self.tally,
                                                     self.selector))
                waiting += 1
            return TICK_SECONDS

        def everyone_in() -> bool:   # kit: and every join event heard by everyone
            return (len(self.clients) == self.count and all(c.ready for c in self.clients)
                    and (self.system == "raw" or all(
                        c.transcript.delivered_seq >= self.count for c in self.clients)))
        deadline = started + SETUP_DEADLINE_SECONDS
        if not spin(self.selector, self.clients, everyone_in, deadline, act):
            raise RuntimeError(f"{self.system}: {self.count} clients not in after "
                               f"{SETUP_DEADLINE_SECONDS:g} s")
        return time.monotonic() - started

    def throughput(self, messages: int) -> None:
        """Every client sends ``messages`` as fast as its window allows."""
        def act(_now: float) -> float:
            for client in self.clients:
                while client.sent < messages and len(client.in_flight) < WINDOW_PER_CLIENT:
                    client.send_message()
                if client.outgoing:
                    client.flush()
            return TICK_SECONDS

        def all_sent_and_heard() -> bool:
            return all(c.sent == messages and not c.in_flight for c in self.clients)
        spin(self.selector, self.clients, all_sent_and_heard,
             time.monotonic() + RUN_DEADLINE_SECONDS, act)

    def paced(self, messages: int, interval_seconds: float) -> list[int]:
        """Every client sends ``messages``, one per interval, from a random start
        in the first interval; returns how late each send was (ns)."""
        start = time.monotonic() + TICK_SECONDS
        due = [start + random.uniform(0, interval_seconds) for _client in self.clients]
        lateness_ns: list[int] = []

        def act(now: float) -> float:
            soonest = TICK_SECONDS
            for index, client in enumerate(self.clients):
                while client.sent < messages and due[index] <= now:
                    lateness_ns.append(int((now - due[index]) * 1e9))
                    client.send_message()
                    due[index] += interval_seconds
                if client.outgoing:
                    client.flush()
                if client.sent < messages:
                    soonest = min(soonest, due[index] - now)
            return soonest
        spin(self.selector, self.clients, lambda: all(c.sent == messages for c in self.clients),
             start + messages * interval_seconds + RUN_DEADLINE_SECONDS, act)
        return lateness_ns

    def drain(self) -> str:
        """Wait for the last deliveries; return whether the transcripts match."""
        expected_pairs = self.count * self.tally.sent
        if self.system == "raw":
            def quiet() -> bool:
                idle_ns = time.perf_counter_ns() - max(self.tally.last_delivery_ns,
                                                       self.tally.first_send_ns)
                return (len(self.tally.latencies_ns) >= expected_pairs
                        or idle_ns > QUIET_SECONDS * 1e9)
            spin(self.selector, self.clients, quiet, time.monotonic() + DRAIN_DEADLINE_SECONDS)
            orders = {client.order.hexdigest() for client in self.clients}
            return "yes" if len(orders) == 1 else f"no: {len(orders)} different orders"
        refused = sum(len(client.errors) for client in self.clients)
        final_seq = self.count + self.tally.sent - refused
        caught_up = spin(self.selector, self.clients,
                         lambda: all(c.transcript.delivered_seq >= final_seq for c in self.clients),
                         time.monotonic() + DRAIN_DEADLINE_SECONDS)
        if not caught_up:
            behind = sum(c.transcript.delivered_seq < final_seq for c in self.clients)
            return f"no: {behind} clients short of #{final_seq}"
        seen_lines = len(self.server.lines)
        self.server.send_line("/hash")
        server_hash = self.server.wait_for(r"^transcript ([0-9a-f]{12}) (\d+)$", seen_lines)
        digests = {(c.transcript.delivered_seq, c.transcript.digest()) for c in self.clients}
        digests.add((int(server_hash.group(2)), server_hash.group(1)))
        notes = f" ({refused} refused)" if refused else ""
        return ("yes" if len(digests) == 1 else f"no: {len(digests)} different") + notes

    def result(self, messages: int, setup_seconds: float, match: str) -> dict:
        tally = self.tally
        latencies = sorted(tally.latencies_ns)
        seconds = max(1e-9, (tally.last_delivery_ns - tally.first_send_ns) / 1e9)
        return {
            "system": self.system, "clients": self.count, "messages": messages,
            "setup_s": setup_seconds,
            "delivered_pct": 100 * len(latencies) / (self.count * tally.sent),
            "pairs_per_s": len(latencies) / seconds,
            "messages_per_s": len(tally.distinct) / seconds,
            "p50_ms": percentile(latencies, 50) / 1e6, "p99_ms": percentile(latencies, 99) / 1e6,
            "match": match, "repairs": tally.repairs,
            "per_datagram": tally.datagram_lines / max(1, tally.datagrams),
        }


def percentile(sorted_values: list[int], percent: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan if it is empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * percent // 100))
    return sorted_values[int(rank) - 1]


def measure(system: str, count: int, workdir: Path, workload: Callable[[Run], object],
            messages: int) -> dict:
    with Run(system, count, workdir) as run:
        setup_seconds = run.connect()
        extra = workload(run)
        match = run.drain()
        result = run.result(messages, setup_seconds, match)
    if extra:
        result["late_p99_ms"] = percentile(sorted(extra), 99) / 1e6
    print(f"  {system:4} {count:4} clients: setup {setup_seconds:.1f} s, "
          f"{result['pairs_per_s']:,.0f} pairs/s, p99 {result['p99_ms']:.1f} ms, "
          f"delivered {result['delivered_pct']:.1f}%, match {match}", file=sys.stderr, flush=True)
    return result


# --- Tables ------------------------------------------------------------------------------

def print_table(title: str, columns: list[tuple[str, str, str]], rows: list[dict]) -> None:
    """columns: (heading, key, format). Right-aligned, as wide as the widest cell."""
    cells = [[format(row[key], spec) if key in row else "-" for _h, key, spec in columns]
             for row in rows]
    widths = [max([len(heading), *(len(line[i]) for line in cells)])
              for i, (heading, _k, _s) in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(heading.rjust(width) for (heading, _k, _s), width in zip(columns, widths)))
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default=",".join(map(str, CLIENT_COUNTS)),
                        help="client counts of the throughput runs, e.g. 10,50")
    parser.add_argument("--quick", action="store_true", help="fewer messages per throughput run")
    parser.add_argument("--raw-relay", type=int, metavar="BROADCAST_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_relay:
        serve_raw_relay(args.raw_relay)
        return 0
    counts = [int(count) for count in args.clients.split(",") if count]
    # Two sockets per client, and the kernel counts both against this limit.
    raise_open_file_limit(2 * max(counts + [PACED_CLIENTS]) + 64)
    random.seed(2026)
    pairs = PAIRS_PER_THROUGHPUT_RUN[args.quick]
    throughput_rows, paced_rows = [], []
    with tempfile.TemporaryDirectory(prefix="lab2_fanout_") as workdir:
        print("throughput runs", file=sys.stderr)
        for count in counts:
            messages = max(MIN_MESSAGES_PER_CLIENT, pairs // count ** 2)
            for system in ("kit", "raw"):
                throughput_rows.append(measure(system, count, Path(workdir),
                                               lambda run: run.throughput(messages), messages))
        print("paced runs", file=sys.stderr)
        for interval_ms in PACED_INTERVALS_MS:
            for system in ("kit", "raw"):
                row = measure(system, PACED_CLIENTS, Path(workdir),
                              lambda run: run.paced(PACED_MESSAGES, interval_ms / 1000),
                              PACED_MESSAGES)
                row["workload"] = f"1 per {interval_ms} ms"
                paced_rows.append(row)
    print_table(f"Throughput: each client sends its messages with at most {WINDOW_PER_CLIENT} "
                "in flight; every client hears every message", [
                    ("system", "system", ""), ("clients", "clients", "d"),
                    ("msgs/client", "messages", "d"), ("delivered %", "delivered_pct", ".1f"),
                    ("deliveries/s", "pairs_per_s", ",.0f"),
                    ("messages/s", "messages_per_s", ",.0f"),
                    ("p50 ms", "p50_ms", ".1f"), ("p99 ms", "p99_ms", ".1f"),
                    ("lines/datagram", "per_datagram", ".1f"), ("repairs", "repairs", "d"),
                    ("transcripts match", "match", "")], throughput_rows)
    for kit, raw in zip(throughput_rows[::2], throughput_rows[1::2]):
        ratio = kit["pairs_per_s"] / raw["pairs_per_s"]
        print(f"{kit['clients']:4} clients: kit/raw rate {ratio:.2f}"
              f"  (aim: at least 0.5{'' if ratio >= 0.5 else ': MISSED'})")
    print_table(f"Paced: {PACED_CLIENTS} clients, each sending {PACED_MESSAGES} messages at a "
                "steady pace (aim: 100% delivered, p99 under 50 ms)", [
                    ("workload", "workload", ""), ("system", "system", ""),
                    ("delivered %", "delivered_pct", ".1f"), ("p50 ms", "p50_ms", ".1f"),
                    ("p99 ms", "p99_ms", ".1f"), ("send late p99 ms", "late_p99_ms", ".1f"),
                    ("lines/datagram", "per_datagram", ".1f"), ("repairs", "repairs", "d"),
                    ("transcripts match", "match", "")], paced_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
