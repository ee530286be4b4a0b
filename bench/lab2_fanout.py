"""What does a Lab 2 room cost, and what does each member pay? The real server
against a plain UDP relay, measured in the same run.

Two systems carry the same chat lines from N members to all N members:

- kit: the real ``python -m lab2_udp.server`` as a process. Each simulated
  member has its own encrypted TCP session (handshake, Register, Say), its
  own UDP socket on the broadcast port, its own DatagramOpener and its own
  Transcript, exactly like lab2_udp/client.py: every receiver lets its
  DatagramGate decide which datagrams are worth opening, opens *and* checks
  the Ed25519 signature of every one, delivers events strictly in order,
  hashes them, asks for repairs over TCP when it sees a gap, and falls back
  to TCP alone if it hears nothing (deaf). They join in waves no bigger than
  the server's login queue for one address, as a class behind one address would.
- raw (the baseline): a relay written below, run as a process too: plain
  newline-ended lines in over TCP, each sent as it is in one UDP datagram to
  the broadcast address. Its receivers just recv(): no crypto, no order, no
  repair. It shows what loopback and Python's socket calls cost by themselves.

A class has one member per machine, and each pays only for itself. So the
simulated members run in RECEIVER_PROCESSES processes (at least one per core),
each with its own selectors loop, and each process measures the CPU time it
used. "CPU/delivery" is that time over the events its members delivered: what
one member's machine spends per event it shows, given for each process. "member CPU %" is the share of
one core a member used during the run. On this machine the members and the
server share a few cores, so when the members together need more than the
cores left, latency is queueing in the bench, not the cost of one member.

Every line carries its send time (CLOCK_MONOTONIC, the same in every
process); a receiver takes the latency when it delivers the line (kit: in
order, after any repair). p50/p99 are over all (receiver, message) pairs.

    python bench/lab2_fanout.py [--quick]       (bench/report.py writes docs/performance.md)
"""
from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import resource
import selectors
import shutil
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Run from a clone without installing: make the kit's packages importable.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import net  # noqa: E402
from common.admission import LAB2_LIMITS  # noqa: E402
from common.config import create_env_file, load_settings  # noqa: E402
from common.errors import ProtocolError  # noqa: E402
from common.framing import DatagramOpener, KeyNotYetHere  # noqa: E402
from common.messages import (  # noqa: E402
    ErrorNotice,
    Goodbye,
    History,
    HistoryStart,
    IgnoreList,
    LoginAccepted,
    LoginRejected,
    Register,
    RepairRequest,
    RoomKey,
    Say,
)
from common.room import BATCHING, Batching  # noqa: E402
from common.session import SecureSession  # noqa: E402
from common.transcript import DatagramGate, EarlyDatagrams, Transcript, read_room_datagram  # noqa: E402

# --- Settings ------------------------------------------------------------------------

HOST, BROADCAST_ADDR = "127.0.0.1", "127.255.255.255"
RECEIVER_PROCESSES = max(2, os.cpu_count() or 1)
WINDOW_PER_CLIENT = 4          # own messages in flight in the throughput runs
TALKER = 1                     # the one member who talks in "one talks" (not the member alone)
# Every member is on 127.0.0.1, and the server queues only so many logins per address: the
# members join in waves of that many, over all the receiver processes together.
LOGINS_PER_WAVE = LAB2_LIMITS.queued_logins_per_address
TICK_SECONDS = 0.05            # repair checks, as lab2_udp/client.py does them
LOST_AFTER_SECONDS = 2.0       # a raw message not heard back by then is lost: free its slot
QUIET_SECONDS = 1.0            # raw: no more deliveries for this long means the run is over
SETUP_DEADLINE_SECONDS = 180.0
# The bench waits this much longer than a receiver process does: a process that
# gives up says why (which members, waiting for what) before the bench would.
ANSWER_GRACE_SECONDS = 15.0
RUN_DEADLINE_SECONDS = 120.0
DRAIN_DEADLINE_SECONDS = 30.0  # kit: time for the last repairs after the last send
LEAVE_DEADLINE_SECONDS = 60.0
START_DELAY_SECONDS = 0.3      # every process starts sending at the same moment
PASSWORD = "bench password 1"
# The rate limit (20 messages/s per member) would refuse the throughput runs:
# the bench raises it, and room enough for every member.
FAST_ROOM = ("MAX_MESSAGES_PER_SECOND=1000000\nMAX_CLIENTS=500\nMAX_CLIENTS_PER_ADDRESS=500\n"
             "MAX_NEW_ACCOUNTS_PER_HOUR=1000\n")
# The default rate limit, as a class has it: the window's row has one member talk at this budget.
BUDGET_MESSAGES_PER_SECOND = 20
BUDGET_ROOM = (f"MAX_MESSAGES_PER_SECOND={BUDGET_MESSAGES_PER_SECOND}\nMAX_CLIENTS=500\nMAX_CLIENTS_PER_ADDRESS=500\n"
               "MAX_NEW_ACCOUNTS_PER_HOUR=1000\n")
# A hash cheap enough that 500 registrations take a moment, not minutes; the
# login storm keeps the real (default) cost.
CHEAP_HASHES = "ARGON2_MEMORY_KIB=8\nARGON2_ITERATIONS=1\n"
# Settings a developer may have exported; the bench's own .env must win.
SETTING_VARIABLES = ("CHAT_PSK", "SERVER_PRIVATE_KEY", "SERVER_PUBLIC_KEY", "SERVER_HOST",
                     "LAB2_PORT", "BROADCAST_ADDR", "BROADCAST_PORT", "MULTICAST_GROUP", "DB_PATH",
                     "MAX_CLIENTS", "MAX_MESSAGES_PER_SECOND", "ARGON2_MEMORY_KIB",
                     "ARGON2_ITERATIONS")


@dataclass(frozen=True)
class Plan:
    """What one bench run measures; --quick shrinks every workload."""
    member_counts: tuple[int, ...]
    pairs_per_throughput_run: int
    paced_members: int
    paced_messages: int
    paced_intervals_ms: tuple[int, ...]
    batching_repeats: int                 # the batching candidates, each this many times
    talker_messages: int                  # the window's row: what the one member says
    storm_logins: int
    storm_interval_ms: int
    window_repeats: int                   # the window's row: rounds of headless, then window


PLANS = {
    False: Plan((10, 50, 200, 500), 200_000, 50, 50, (200, 100, 50, 20), 2, 200, 100, 100, 5),
    True: Plan((10, 50, 100), 20_000, 50, 12, (200, 20), 2, 40, 30, 100, 2),
}


def fixed_window(seconds: float) -> Batching:
    """The rule the kit had before: a datagram at most every ``seconds``."""
    return Batching(seconds, seconds, 1, seconds)


# The batching rules the bench compares (docs/performance.md, "Batching"), the shipped one
# first. Only the bench runs the others: it hands one to the server it starts.
BATCHING_CANDIDATES = {
    "shipped": BATCHING,
    "fixed 3 ms": fixed_window(0.003),
    "fixed 15 ms": fixed_window(0.015),
    "4 events, 5 ms apart": Batching(0.003, 0.005, 4, 0.015),
    "3 events, 3 ms apart": Batching(0.003, 0.003, 3, 0.015),
}


def describe(rule: Batching) -> str:
    """A batching rule in a few words, for the tables."""
    if rule.full_events == 1 and rule.quiet_seconds == rule.spacing_seconds == rule.hold_seconds:
        return f"fixed window {1000 * rule.hold_seconds:g} ms"
    return (f"at once after {1000 * rule.quiet_seconds:g} ms quiet; else {rule.full_events} events "
            f"({1000 * rule.spacing_seconds:g} ms apart) or {1000 * rule.hold_seconds:g} ms")


# --- The raw relay (the baseline's server, run as a subprocess) -----------------------

def serve_raw_relay(broadcast_port: int) -> None:
    """Re-broadcast every line read from any TCP client as one UDP datagram,
    until stdin closes."""
    selector = selectors.DefaultSelector()
    listener = net.listening_socket(HOST, 0)
    sender = net.broadcast_sender()
    pending: dict[socket.socket, bytearray] = {}

    def on_connect(_mask: int) -> None:
        try:
            sock, _addr = net.accept(listener)
        except OSError:
            return   # the caller gave up already
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
            print("a client left", file=sys.stderr, flush=True)
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


# --- The server as a process ------------------------------------------------------------

class ServerProcess:
    """A server as a child process: stdin kept open, stderr collected line by line,
    its CPU time and memory read from /proc."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        env = {**{key: value for key, value in os.environ.items() if key not in SETTING_VARIABLES}, **(env or {})}
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
        self.process.wait()   # stderr closed: the server is ending; a waiter then sees it ended
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, pattern: str, after_line: int = 0, count: int = 1,
                 timeout: float = SETUP_DEADLINE_SECONDS) -> re.Match | None:
        """The count-th stderr line after ``after_line`` that matches, or None
        if the deadline passes or the server ends first."""
        def found() -> re.Match | None:
            matches = [m for m in map(re.compile(pattern).search, self.lines[after_line:]) if m]
            return matches[count - 1] if len(matches) >= count else None
        with self.changed:
            self.changed.wait_for(lambda: found() or self.process.poll() is not None, timeout)
            return found()

    def send_line(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))

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


def start_kit_server(workdir: Path, settings: str, batching: Batching | None = None,
                     server_file: Path | None = None, display: str | None = None) -> dict:
    """The real Lab 2 server with a fresh .env and database. With
    ``batching`` it runs with that batching rule instead of its own;
    with ``server_file``, that file (a student's copy of lab2_udp/server.py)
    runs instead, importing the kit's common/. With ``display`` (an X display's
    DISPLAY), it opens its window there instead of running headless."""
    env_file = workdir / f"{time.monotonic_ns()}.env"
    create_env_file(env_file)
    with open(env_file, "a", encoding="utf-8") as settings_file:
        settings_file.write(settings)
    broadcast_port = free_udp_port()
    arguments = [*(["--headless"] if display is None else []), "--host", HOST, "--port", "0",
                 "--broadcast-addr", BROADCAST_ADDR, "--broadcast-port", str(broadcast_port), "--env", str(env_file),
                 "--db", str(env_file.with_suffix(".db"))]
    # A window reads stdin too (CHAT_WINDOW_STDIN): the bench can ask it for /hash.
    env = None if display is None else {"DISPLAY": display, "CHAT_WINDOW_STDIN": "1"}
    if server_file is not None:
        command = [sys.executable, str(server_file), *arguments]
        env = {**(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    elif batching is None:
        command = [sys.executable, "-m", "lab2_udp.server", *arguments]
    else:   # the room reads BATCHING whenever it decides what to send
        command = [sys.executable, "-c", "import sys, common.room as r, lab2_udp.server as s; "
                   f"r.BATCHING = r.{batching!r}; sys.exit(s.main(sys.argv[1:]))", *arguments]
    server = ServerProcess(command, env)
    listening = server.wait_for(r"^listening on 127\.0\.0\.1:(\d+)")
    if not listening:
        server.stop()
        raise RuntimeError("the server did not start:\n" + "\n".join(server.lines[-20:]))
    return {"server": server, "address": (HOST, int(listening.group(1))),
            "broadcast_port": broadcast_port, "env_file": str(env_file)}


def start_raw_relay(_workdir: Path) -> dict:
    broadcast_port = free_udp_port()
    server = ServerProcess([sys.executable, __file__, "--raw-relay", str(broadcast_port)])
    listening = server.wait_for(r"^listening on 127\.0\.0\.1:(\d+)")
    return {"server": server, "address": (HOST, int(listening.group(1))),
            "broadcast_port": broadcast_port, "env_file": None}


# --- One simulated member (runs in a receiver process) ----------------------------------

class Tally:
    """What the receivers of one process heard: latencies and who got what."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.datagrams = 0        # opened by a receiver (kit: one signature check each)
        self.datagram_lines = 0   # the lines those datagrams carried
        self.repairs = 0          # kit: RepairRequests sent
        self.last_delivery_ns = 0

    def heard(self, receiver, text: str, now_ns: int) -> None:
        """One delivered line "SENDER NUMBER SEND_NS" at one receiver."""
        sender, number, sent_ns = map(int, text.split())
        self.latencies_ns.append(now_ns - sent_ns)
        self.last_delivery_ns = now_ns
        if sender == receiver.index:
            receiver.in_flight.pop(number, None)


class BenchClient:
    """What both kinds of member share: the sockets, what they sent, what is in flight."""

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
        self.in_flight[self.sent] = now_ns
        self.sent += 1
        return f"{self.index} {self.sent - 1} {now_ns}"

    def on_connected(self, _mask: int) -> None:
        try:
            net.finish_connect(self.sock)
        except OSError as error:
            self.fail(f"connect: {error}")
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
        self.gate = DatagramGate(net.is_own_address)   # as the client: not every datagram is worth a check
        self.early = EarlyDatagrams()
        self.transcript = Transcript()
        self.logged_in = False
        self.errors: list[str] = []
        super().__init__(*args)
        self.handlers = {
            LoginAccepted: self.handle_login_accepted, RoomKey: self.handle_room_key,
            IgnoreList: lambda message: None, History: self.handle_history,
            HistoryStart: lambda message: self.transcript.start_at(message.summary.seq, message.running_hash),
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

    def on_connected(self, mask: int) -> None:
        super().on_connected(mask)
        if self.failed is None:
            self.gate.server_host = self.sock.getpeername()[0]

    def handle_room_key(self, message: RoomKey) -> None:
        if self.opener is None:
            self.opener = DatagramOpener(message.signing_key)
            self.transcript.heard(time.monotonic())   # from now on, silence means deafness
        self.opener.add_room_key(message.epoch, message.key)
        for datagram, source in self.early.release(time.monotonic()):
            self.open_datagram(datagram, source, time.monotonic())

    def handle_history(self, message: History) -> None:
        self.deliver(self.transcript.receive(message.events, message.latest_seq))

    def on_datagrams(self, _mask: int) -> None:
        while True:
            try:
                datagram, source = self.udp.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
            except BlockingIOError:
                return
            now = time.monotonic()
            if self.opener is None or not self.gate.worth_opening(source, now):
                continue   # not logged in yet, or not from the server: the real client skips it too
            self.open_datagram(datagram, source, now)

    def open_datagram(self, datagram: bytes, source: tuple, now: float) -> None:
        try:
            batch = read_room_datagram(self.opener, datagram)
        except KeyNotYetHere:   # it overtook its room key
            return self.early.hold(datagram, source, now)
        except ProtocolError:   # not for us, or damaged: the real client drops it too
            return self.gate.rejected(source, now)
        self.gate.opened(source)
        self.transcript.heard(now)
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


# --- A receiver process: some of the members, on their own core ---------------------------

class ReceiverGroup:
    """The members one process simulates. Commands come from the bench over a
    pipe, which sits in the same selectors loop as the members' sockets, so
    the members keep receiving while the process waits for its next command.
    Each command answers once, when its work is done."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.selector = selectors.DefaultSelector()
        self.selector.register(conn, selectors.EVENT_READ, self.on_command)
        self.clients: list = []
        self.act: Callable[[float], float] | None = None   # runs every round while set
        self.done: Callable[[], object] | None = None      # returns the answer when finished
        self.deadline = float("inf")
        self.stopped = False

    def serve(self) -> None:
        next_tick = time.monotonic()
        while not self.stopped:
            now = time.monotonic()
            wait_seconds = min(TICK_SECONDS, self.act(now)) if self.act else TICK_SECONDS
            for key, mask in self.selector.select(max(0.0, min(wait_seconds, next_tick - now))):
                if key.fd in self.selector.get_map():   # not closed by a command this round
                    key.data(mask)
            now = time.monotonic()
            if now >= next_tick:
                for client in self.clients:
                    client.tick(now)
                next_tick = now + TICK_SECONDS
            failed = [client.failed for client in self.clients if client.failed]
            if self.done and (failed or now > self.deadline):
                self.answer({"error": f"{len(failed)} member(s) failed, first: {failed[0]}"
                             if failed else f"deadline passed: {self.waiting_for()}"})
            elif self.done:
                answer = self.done()
                if answer is not None:
                    self.answer(answer)

    def answer(self, answer: dict) -> None:
        self.act = self.done = None
        self.conn.send(answer)

    def waiting_for(self) -> str:
        """What this process's members still lack, for an error that says why a wait failed."""
        kit = self.system == "kit"
        not_in = [c.index for c in self.clients if not c.ready]
        lines = [f"{len(self.clients)} member(s) here", f"{len(not_in)} not logged in with the room key "
                 f"(first: {not_in[:5]})" if not_in else "all logged in"]
        if kit and self.clients:
            seqs = [c.transcript.delivered_seq for c in self.clients]
            lines.append(f"delivered up to #{min(seqs)}..#{max(seqs)} (the server announced "
                         f"#{max(c.transcript.latest_known_seq for c in self.clients)}; wanted #{self.wanted_seq})")
            refused = [text for c in self.clients for text in c.errors]
            if refused:
                lines.append(f"{len(refused)} refused, first: {refused[0]}")
        lines.append(f"sent {sum(c.sent for c in self.clients)}")
        return "; ".join(lines)

    def on_command(self, _mask: int) -> None:
        command, arguments = self.conn.recv()
        getattr(self, command)(**arguments)

    def connect(self, system: str, indices: list[int], address: tuple, broadcast_port: int,
                env_file: str | None, members_in_room: int) -> None:
        """Bring these members in (one wave: the bench keeps every wave within the
        server's login queue for one address); answer once all our members are in
        and (kit) have seen the joins of everyone in the room so far."""
        self.tally = Tally()
        self.system = system
        settings = load_settings(env_file, create=False) if env_file else None
        for index in indices:
            self.clients.append(KitClient(settings, index, self.tally, self.selector, address, broadcast_port)
                                if system == "kit" else
                                RawClient(index, self.tally, self.selector, address, broadcast_port))

        self.wanted_seq = members_in_room

        def done() -> dict | None:
            everyone_in = all(client.ready for client in self.clients) and (
                system == "raw"
                or all(c.transcript.delivered_seq >= members_in_room for c in self.clients))
            return {} if everyone_in else None
        self.done = done
        self.deadline = time.monotonic() + SETUP_DEADLINE_SECONDS

    def run(self, workload: str, messages: int, interval_seconds: float, start_at: float,
            final_seq: int, total_messages: int) -> None:
        """Send our members' messages ("throughput": as fast as the window
        allows; "paced": one per interval from a random start; "one talks": only
        member TALKER, paced), then wait for every message of every member; answer
        with what we measured."""
        self.tally = tally = Tally()
        self.wanted_seq = final_seq
        for client in self.clients:
            client.tally = tally
        rng = random.Random(os.getpid())
        due = [start_at + rng.uniform(0, interval_seconds) for _client in self.clients]
        lateness_ns: list[int] = []
        cpu_at_start = time.process_time()
        wall_at_start = time.monotonic()
        expected_pairs = len(self.clients) * total_messages

        def talks(client) -> bool:
            return workload != "one talks" or client.index == TALKER

        def act(now: float) -> float:
            soonest = TICK_SECONDS
            for number, client in enumerate(self.clients):
                if not talks(client):
                    pass
                elif workload == "throughput":
                    while (now >= start_at and client.sent < messages
                           and len(client.in_flight) < WINDOW_PER_CLIENT):
                        client.send_message()
                else:
                    while client.sent < messages and due[number] <= now:
                        lateness_ns.append(int((now - due[number]) * 1e9))
                        client.send_message()
                        due[number] += interval_seconds
                        if workload == "one talks":   # at its budget: late, it goes on from now, never
                            due[number] = max(due[number], now + interval_seconds)   # in a burst refused
                    if client.sent < messages:
                        soonest = min(soonest, due[number] - now)
                if client.outgoing:
                    client.flush()
            return max(0.0, min(soonest, start_at - now)) if now < start_at else soonest

        def done() -> dict | None:
            if not all(client.sent == messages for client in self.clients if talks(client)):
                return None
            if self.system == "kit":
                finished = all(c.transcript.delivered_seq >= final_seq for c in self.clients)
                digests = sorted({(c.transcript.delivered_seq, c.transcript.digest())
                                  for c in self.clients})
            else:
                idle_ns = time.perf_counter_ns() - tally.last_delivery_ns
                finished = (len(tally.latencies_ns) >= expected_pairs
                            or (tally.last_delivery_ns and idle_ns > QUIET_SECONDS * 1e9))
                digests = sorted({c.order.hexdigest() for c in self.clients})
            if not finished:
                return None
            return {"latencies_ns": tally.latencies_ns, "datagrams": tally.datagrams,
                    "datagram_lines": tally.datagram_lines, "repairs": tally.repairs,
                    "last_delivery_ns": tally.last_delivery_ns, "lateness_ns": lateness_ns,
                    "cpu_seconds": time.process_time() - cpu_at_start,
                    "wall_seconds": time.monotonic() - wall_at_start, "digests": digests,
                    "refused": sum(len(getattr(c, "errors", ())) for c in self.clients)}
        self.act, self.done = act, done
        self.deadline = start_at + RUN_DEADLINE_SECONDS + messages * interval_seconds

    def leave(self) -> None:
        """Every member leaves (closes its connection); answer at once. A command still
        waiting (one the bench gave up on) is dropped: it would answer later, for nothing."""
        self.act = self.done = None
        for client in self.clients:
            client.close()
        self.clients = []
        self.conn.send({})

    def exit(self) -> None:
        self.stopped = True


def receiver_process(conn) -> None:
    ReceiverGroup(conn).serve()


class ReceiverPool:
    """RECEIVER_PROCESSES processes, started once and used by every run."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns, self.processes = [], []
        for _number in range(RECEIVER_PROCESSES + 1):   # the last one: the member alone
            ours, theirs = context.Pipe()
            process = context.Process(target=receiver_process, args=(theirs,), daemon=True)
            process.start()
            self.conns.append(ours)
            self.processes.append(process)

    def command(self, name: str, per_process: list[dict], timeout: float,
                serve: Callable[[float], None] | None = None) -> list[dict]:
        """Send one command to every process; return their answers. ``serve``
        (the login storm) runs between waits."""
        for conn in self.conns:   # a late answer to a command given up on must not answer this one
            while conn.poll():
                conn.recv()
        for conn, arguments in zip(self.conns, per_process):
            conn.send((name, arguments))
        answers: dict[int, dict] = {}
        deadline = time.monotonic() + timeout + ANSWER_GRACE_SECONDS
        while len(answers) < len(self.conns):
            if time.monotonic() > deadline:
                silent = [number for number in range(len(self.conns)) if number not in answers]
                raise RuntimeError(f"{name}: receiver process(es) {silent} gave no answer in "
                                   f"{timeout + ANSWER_GRACE_SECONDS:g} s (stuck, or starved of CPU)")
            waiting = [conn for number, conn in enumerate(self.conns) if number not in answers]
            for conn in multiprocessing.connection.wait(waiting, 0.0 if serve else TICK_SECONDS):
                answers[self.conns.index(conn)] = conn.recv()
            if serve:
                serve(TICK_SECONDS / 5)
        errors = [f"process {number}: {answer['error']}" for number, answer in sorted(answers.items())
                  if "error" in answer]
        if errors:
            raise RuntimeError(f"{name}: {' | '.join(errors)}")
        return [answers[number] for number in range(len(self.conns))]

    def close(self) -> None:
        for conn in self.conns:
            conn.send(("exit", {}))
        for process in self.processes:
            process.join(5)


# --- The login storm: connections that log in all at once, from this process ---------

class StormLogin:
    """One connection that registers and stays: for the kit a full handshake
    and an Argon2id hash on the server; for the raw relay just a connection.
    Each comes from its own loopback address (127.0.1.N), as a class's machines
    would, and one the server turns away (its login queue is full) tries again
    RETRY_SECONDS later, as a person would."""

    RETRY_SECONDS = 0.05

    def __init__(self, index: int, selector: selectors.BaseSelector, room: dict) -> None:
        self.selector, self.room, self.index = selector, room, index
        self.name = f"storm{index}"
        self.started = time.monotonic()
        self.accepted_after: float | None = None
        self.retry_at: float | None = None
        self.attempts = 0
        self.connect()

    def connect(self) -> None:
        self.attempts += 1
        self.session = (SecureSession.client(*_keys(self.room["env_file"])) if self.room["env_file"] else None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((f"127.0.{1 + self.index // 250}.{1 + self.index % 250}", 0))
        self.sock.setblocking(False)
        self.sock.connect_ex(self.room["address"])
        self.selector.register(self.sock, selectors.EVENT_WRITE, self.on_connected)

    def retry_if_due(self, now: float) -> None:
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.connect()

    def on_connected(self, _mask: int) -> None:
        net.finish_connect(self.sock)
        self.selector.modify(self.sock, selectors.EVENT_READ, self.on_readable)
        self.flush()

    def flush(self) -> None:
        if self.session:
            net.send_pending(self.selector, self.sock, self.session.outgoing)

    def on_readable(self, _mask: int) -> None:
        data = net.receive(self.sock)
        if not data:   # the server hung up on us: turned away, so try again soon
            self.close()
            if self.accepted_after is None:
                self.retry_at = time.monotonic() + self.RETRY_SECONDS
            return
        if self.session is None:
            self.accepted_after = self.accepted_after or time.monotonic() - self.started
            return
        was_established = self.session.established
        for message in self.session.receive(data):
            if isinstance(message, LoginAccepted):
                self.accepted_after = time.monotonic() - self.started
        if self.session.established and not was_established:
            self.session.send(Register(self.name, PASSWORD))
        self.flush()

    def close(self) -> None:
        if self.sock.fileno() != -1 and self.sock.fileno() in self.selector.get_map():   # -1: closed already
            self.selector.unregister(self.sock)
        self.sock.close()


def _keys(env_file: str) -> tuple[bytes, bytes]:
    settings = load_settings(env_file, create=False)
    return settings.psk, settings.server_public_key


# --- One run: a server, N members, one workload ------------------------------------------

class Run:
    """One system, N members spread over the receiver processes."""

    def __init__(self, pool: ReceiverPool, system: str, members: int, workdir: Path,
                 settings: str = FAST_ROOM + CHEAP_HASHES, batching: Batching | None = None,
                 server_file: Path | None = None, display: str | None = None) -> None:
        self.pool, self.system, self.members = pool, system, members
        self.name = "the submitted server's room" if server_file else f"{system} room"   # in its messages
        self.room = (start_kit_server(workdir, settings, batching, server_file, display) if system == "kit"
                     else start_raw_relay(workdir))
        self.server: ServerProcess = self.room["server"]
        self.storm: list[StormLogin] = []
        self.joined = 0
        self.latencies_ns: list[int] = []   # every (member, message) latency of the last run, sorted
        self.failed: str | None = None      # why the members did not all get in, if they did not

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_exc_info) -> None:
        self.server.stop()
        for login in self.storm:
            login.close()
        self.pool.command("leave", [{}] * len(self.pool.conns), SETUP_DEADLINE_SECONDS)

    def connect(self) -> dict:
        """Everyone in; returns the setup time and the server's memory per member. A join
        wave that does not finish (a saturated machine) is logged with its reason; the
        run's row then says so, and the bench goes on."""
        rss_before = self.server.rss_kib()
        started = time.monotonic()
        # Member 0 has a process to itself, like a member with its own machine:
        # its latency has no queueing behind other simulated members in it.
        shared = RECEIVER_PROCESSES
        process_of = [shared] + [(index - 1) % shared for index in range(1, self.members)]
        for first in range(0, self.members, LOGINS_PER_WAVE):
            wave = range(first, min(self.members, first + LOGINS_PER_WAVE))
            try:
                self.pool.command("connect", [
                    {"system": self.system, "indices": [i for i in wave if process_of[i] == number],
                     "address": self.room["address"], "broadcast_port": self.room["broadcast_port"],
                     "env_file": self.room["env_file"], "members_in_room": wave[-1] + 1}
                    for number in range(shared + 1)], SETUP_DEADLINE_SECONDS)
            except RuntimeError as error:
                last = " / ".join(self.server.lines[-3:]) or "nothing"
                self.failed = (f"{self.name} of {self.members}: the join wave of members {wave[0]}-"
                               f"{wave[-1]} did not finish ({error}); the server's last lines: {last}")
                log(f"  {self.failed}")
                return {"setup_s": float("nan"), "kib_per_member": float("nan")}
        self.joined = self.members
        return {"setup_s": time.monotonic() - started,
                "kib_per_member": (self.server.rss_kib() - rss_before) / self.members}

    def run(self, workload: str, messages: int, interval_seconds: float = 0.0,
            storm_logins: int = 0) -> dict:
        """Drive one workload to its end and measure it. A login storm, if any,
        starts one second into the sending."""
        if self.failed:
            return self.unfinished(self.failed)
        start_at = time.monotonic() + START_DELAY_SECONDS
        total = (1 if workload == "one talks" else self.members) * messages
        final_seq = self.joined + storm_logins + total
        selector = selectors.DefaultSelector()

        def serve(timeout: float) -> None:
            if storm_logins and not self.storm and time.monotonic() > start_at + 1.0:
                self.storm = [StormLogin(n, selector, self.room) for n in range(storm_logins)]
            for login in self.storm:
                login.retry_if_due(time.monotonic())
            for key, mask in (selector.select(timeout) if selector.get_map() else ()):
                key.data(mask)
        cpu_before = self.server.cpu_seconds()
        try:
            answers = self.pool.command("run", [
                {"workload": workload, "messages": messages, "interval_seconds": interval_seconds,
                 "start_at": start_at, "final_seq": final_seq, "total_messages": total}
            ] * len(self.pool.conns), RUN_DEADLINE_SECONDS + DRAIN_DEADLINE_SECONDS
                + messages * interval_seconds, serve)
        except RuntimeError as error:   # a saturated machine: the table says so, and the bench goes on
            log(f"  {self.system}, {self.members} members: {error}")
            return self.unfinished(str(error))
        server_cpu = self.server.cpu_seconds() - cpu_before
        self.joined += storm_logins
        return self.result(answers, total, start_at, server_cpu)

    def unfinished(self, reason: str) -> dict:
        """The row of a run that did not finish: its reason, and no numbers."""
        return {"system": self.system, "members": self.members, "match": f"did not finish: {reason}",
                **dict.fromkeys(UNFINISHED_KEYS, float("nan"))}

    def result(self, answers: list[dict], total: int, start_at: float, server_cpu: float) -> dict:
        latencies = self.latencies_ns = sorted(ns for answer in answers for ns in answer["latencies_ns"])
        lateness = sorted(ns for answer in answers for ns in answer["lateness_ns"])
        alone = sorted(answers[-1]["latencies_ns"])
        datagrams = sum(answer["datagrams"] for answer in answers)
        cpu = sum(answer["cpu_seconds"] for answer in answers)
        last_ns = max(answer["last_delivery_ns"] for answer in answers)
        seconds = max(1e-9, last_ns / 1e9 - start_at)
        wall = max(answer["wall_seconds"] for answer in answers)
        row = {
            "system": self.system, "members": self.members,
            "delivered_pct": 100 * len(latencies) / (self.members * total),
            "pairs_per_s": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 50) / 1e6, "p99_ms": percentile(latencies, 99) / 1e6,
            "alone_p50_ms": percentile(alone, 50) / 1e6, "alone_p99_ms": percentile(alone, 99) / 1e6,
            "per_datagram": sum(a["datagram_lines"] for a in answers) / max(1, datagrams),
            "repairs": sum(answer["repairs"] for answer in answers),
            "cpu_us_per_delivery": 1e6 * cpu / max(1, len(latencies)),
            "cpu_us_by_process": per_process_cost(answers),
            "member_cpu_pct": 100 * cpu / self.members / wall,
            "server_us_per_message": 1e6 * server_cpu / max(1, total), "server_cpu_seconds": server_cpu,
            "late_p99_ms": percentile(lateness, 99) / 1e6 if lateness else float("nan"),
            "match": self.match([d for answer in answers for d in answer["digests"]],
                                sum(answer["refused"] for answer in answers)),
        }
        if self.storm:
            waits = sorted(login.accepted_after for login in self.storm if login.accepted_after)
            row["storm_in_pct"] = 100 * len(waits) / len(self.storm)
            row["storm_login_p50_ms"] = 1000 * percentile(waits, 50)
        return row

    def match(self, digests: list, refused: int) -> str:
        """Whether every screen (kit: and the headless server's) shows the same transcript."""
        distinct = set(map(tuple, digests)) if self.system == "kit" else set(digests)
        if self.system == "kit":
            seen_lines = len(self.server.lines)
            self.server.send_line("/hash")
            summary = self.server.wait_for(r"^transcript ([0-9a-f]{12}) (\d+)$", seen_lines)
            distinct.add((int(summary.group(2)), summary.group(1)) if summary else ("no answer",))
        notes = f" ({refused} refused)" if refused else ""
        return ("yes" if len(distinct) == 1 else f"no: {len(distinct)} different") + notes

    def everyone_leaves(self) -> str:
        """Every member closes its connection: does the server survive it?"""
        if self.failed:
            return "-"
        seen_lines = len(self.server.lines)
        self.pool.command("leave", [{}] * len(self.pool.conns), SETUP_DEADLINE_SECONDS)
        if self.system == "raw":
            left = self.server.wait_for("^a client left$", seen_lines, self.members,
                                        LEAVE_DEADLINE_SECONDS)
        else:
            left = self.server.wait_for(r"^client\d+ \(", seen_lines, self.members,
                                        LEAVE_DEADLINE_SECONDS)
        if self.server.process.poll() is not None:
            last = next((line for line in reversed(self.server.lines) if line.strip()), "")
            return f"no: exit {self.server.process.returncode}, {last[:60]}"
        return "yes" if left else f"no: not all {self.members} seen leaving"


# What a run that did not finish has no number for.
UNFINISHED_KEYS = ("delivered_pct", "pairs_per_s", "p50_ms", "p99_ms", "alone_p50_ms", "alone_p99_ms",
                   "per_datagram", "cpu_us_per_delivery", "member_cpu_pct", "server_us_per_message",
                   "server_cpu_seconds", "late_p99_ms")


def per_process_cost(answers: list[dict]) -> str:
    """CPU us per delivery in each receiver process, the member alone's last: "12, 13; alone 41"."""
    costs = [f"{1e6 * a['cpu_seconds'] / len(a['latencies_ns']):.0f}" if a["latencies_ns"] else "-"
             for a in answers]
    return ", ".join(costs[:-1]) + "; alone " + costs[-1]


def percentile(sorted_values: list, percent: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan if it is empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * percent // 100))
    return sorted_values[int(rank) - 1]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- The workloads: one table each, the baseline in the same run -------------------------

def members_table(pool: ReceiverPool, plan: Plan, workdir: Path) -> list[dict]:
    """Throughput at 10..500 members, the server's memory per member, and
    whether it survives everyone leaving."""
    rows = []
    for members in plan.member_counts:
        messages = max(3, plan.pairs_per_throughput_run // members ** 2)
        for system in ("kit", "raw"):
            with Run(pool, system, members, workdir) as run:
                setup = run.connect()
                row = {**run.run("throughput", messages), **setup, "messages": messages,
                       "survives_leaving": run.everyone_leaves()}
            log(f"  members {system} {members}: p50 {row['p50_ms']:.1f} ms, "
                f"p99 {row['p99_ms']:.1f} ms, leaving: {row['survives_leaving']}")
            rows.append(row)
    return rows


def paced_table(pool: ReceiverPool, plan: Plan, workdir: Path) -> list[dict]:
    rows = []
    for interval_ms in plan.paced_intervals_ms:
        for system in ("kit", "raw"):
            with Run(pool, system, plan.paced_members, workdir) as run:
                run.connect()
                row = run.run("paced", plan.paced_messages, interval_ms / 1000)
            row["workload"] = f"1 per {interval_ms} ms"
            log(f"  paced {system} {interval_ms} ms: p50 {row['p50_ms']:.1f} ms, alone {row['alone_p50_ms']:.1f}, "
                f"p99 {row['p99_ms']:.1f} ms")
            rows.append(row)
    return rows


def batching_table(pool: ReceiverPool, plan: Plan, workdir: Path) -> list[dict]:
    """Every batching rule and the raw relay, in turn, in one quiet room (one member,
    one line per 200 ms) and in the paced room at its slowest and fastest rate; all
    of it ``plan.batching_repeats`` times. A row: the median over the repeats, with
    the spread (min-max), and the differences against the raw relay of the same repeat."""
    slowest, fastest = plan.paced_intervals_ms[0], plan.paced_intervals_ms[-1]
    workloads = [(1, slowest), (plan.paced_members, slowest), (plan.paced_members, fastest)]
    systems = [("raw", None), *BATCHING_CANDIDATES.items()]
    runs: dict[tuple, list[dict]] = {}
    for members, interval_ms in workloads:
        for _repeat in range(plan.batching_repeats):
            for name, rule in systems:
                with Run(pool, "raw" if rule is None else "kit", members, workdir, batching=rule) as run:
                    run.connect()
                    row = run.run("paced", plan.paced_messages, interval_ms / 1000)
                runs.setdefault((members, interval_ms, name), []).append(row)
                log(f"  batching {name} ({members} at 1 per {interval_ms} ms): alone p50 "
                    f"{row['alone_p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['per_datagram']:.1f}/datagram")
    rows = []
    for members, interval_ms in workloads:
        raw = runs[(members, interval_ms, "raw")]
        for name, rule in systems:
            repeats = runs[(members, interval_ms, name)]
            row = {"workload": f"{members} member{'s' * (members > 1)}, 1 per {interval_ms} ms",
                   "members": members, "interval_ms": interval_ms, "candidate": name,
                   "system": "raw" if rule is None else "kit",
                   "rule": "raw relay (baseline)" if rule is None else describe(rule),
                   "match": ", ".join(sorted({r["match"] for r in repeats})),
                   "cpu_us_by_process": repeats[len(repeats) // 2].get("cpu_us_by_process", "-")}
            for key in ("alone_p50_ms", "alone_p99_ms", "p50_ms", "p99_ms", "per_datagram", "cpu_us_per_delivery",
                        "member_cpu_pct"):
                row[key] = spread([r[key] for r in repeats])
            row["alone_p50_over_raw_ms"] = spread([r["alone_p50_ms"] - b["alone_p50_ms"] for r, b in zip(repeats, raw)])
            row["p99_x_raw"] = spread([r["p99_ms"] / b["p99_ms"] for r, b in zip(repeats, raw)])
            rows.append(row)
    return rows


class Spread(float):
    """A median that also knows the smallest and largest of its repeats."""
    low: float
    high: float

    def __format__(self, spec: str) -> str:
        if self.low == self.high or math.isnan(self):
            return format(float(self), spec)
        return f"{float(self):{spec}} ({self.low:{spec}}-{self.high:{spec}})"


def spread(values: list[float]) -> Spread:
    """The median and range of the repeats that finished (nan: none did)."""
    finished = [value for value in values if not math.isnan(value)] or [float("nan")]
    middle = Spread(statistics.median(finished))
    middle.low, middle.high = min(finished), max(finished)
    return middle


def storm_table(pool: ReceiverPool, plan: Plan, workdir: Path) -> list[dict]:
    """A paced room while STORM_LOGINS connections log in at once, with the
    real (default) password-hash cost, against the same room without them."""
    rows = []
    for system, storm in (("kit", 0), ("kit", plan.storm_logins), ("raw", 0),
                          ("raw", plan.storm_logins)):
        with Run(pool, system, plan.paced_members, workdir, settings=FAST_ROOM) as run:
            run.connect()
            row = run.run("paced", plan.paced_messages, plan.storm_interval_ms / 1000, storm)
        row["storm"] = storm
        log(f"  storm {system} {storm}: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms")
        rows.append(row)
    return rows


def window_table(pool: ReceiverPool, plan: Plan, workdir: Path) -> list[dict]:
    """The server headless, then with its window open on a private X display (Xvfb), in
    turn, ``plan.window_repeats`` times: the paced room's members listen while one member
    talks at its budget (the default rate limit). A round that does not finish (a saturated
    machine) is logged with its reason and left out of the ratios. Linux only: no Xvfb, no rows."""
    if shutil.which("Xvfb") is None:
        log("  Xvfb is not installed: no rows with the server's window open")
        return []
    from tests.xvfb import start_xvfb   # the tests' own private X display
    xvfb, display = start_xvfb()
    # Within the budget, with room for its repairs, which spend the same budget: a refused line
    # would never be logged, and the run would wait for it in vain.
    interval_seconds = 1.25 / BUDGET_MESSAGES_PER_SECOND
    runs: dict[str, list[dict]] = {"headless": [], "window": []}
    pooled: dict[str, list[int]] = {"headless": [], "window": []}   # every latency of every round
    try:
        for _repeat in range(plan.window_repeats):
            for front_end in runs:
                load = os.getloadavg()[0]
                with Run(pool, "kit", plan.paced_members, workdir, settings=BUDGET_ROOM + CHEAP_HASHES,
                         display=display if front_end == "window" else None) as run:
                    run.connect()
                    row = run.run("one talks", plan.talker_messages, interval_seconds)
                    pooled[front_end] += run.latencies_ns
                row["server_cpu_pct"] = 100 * row["server_cpu_seconds"] / (plan.talker_messages * interval_seconds)
                row["load"] = load
                runs[front_end].append(row)
                log(f"  window {front_end}: p99 {row['p99_ms']:.1f} ms, server CPU {row['server_cpu_pct']:.0f}%, "
                    f"load {load:.1f}")
    finally:
        xvfb.kill()
        xvfb.wait()
    rows = []
    for front_end, repeats in runs.items():
        row = {"front_end": "the server's window open (Xvfb)" if front_end == "window" else "headless",
               "match": ", ".join(sorted({r["match"] for r in repeats}))}
        for key in ("p50_ms", "p99_ms", "alone_p99_ms", "server_cpu_pct", "load"):
            row[key] = spread([r[key] for r in repeats])
        # Each round against the headless run of the same round; a round either did not finish is left out.
        row["p99_x_headless"] = spread([r["p99_ms"] / h["p99_ms"] for r, h in zip(repeats, runs["headless"])])
        # On a loaded machine one round's p99 is a few unlucky moments: all rounds' latencies
        # together (the runs alternate, so both met the same load) give a steadier p99.
        row["pooled_p99_ms"] = percentile(sorted(pooled[front_end]), 99) / 1e6
        row["pooled_p99_x_headless"] = row["pooled_p99_ms"] / (percentile(sorted(pooled["headless"]), 99) / 1e6)
        rows.append(row)
    return rows


# --- Tables ------------------------------------------------------------------------------

COMMON_COLUMNS = [
    ("delivered %", "delivered_pct", ".1f"), ("p50 ms", "p50_ms", ".1f"),
    ("p99 ms", "p99_ms", ".1f"), ("alone p50 ms", "alone_p50_ms", ".1f"),
    ("alone p99 ms", "alone_p99_ms", ".1f"), ("lines/datagram", "per_datagram", ".1f"),
    ("CPU/delivery us", "cpu_us_per_delivery", ".1f"),
    ("CPU/delivery us by process", "cpu_us_by_process", ""), ("member CPU %", "member_cpu_pct", ".2f"),
    ("server us/msg", "server_us_per_message", ".0f"), ("repairs", "repairs", "d"),
    ("transcripts match", "match", ""),
]
TABLES = {
    "members": ("Members: each member sends its messages with at most "
                f"{WINDOW_PER_CLIENT} in flight; every member hears every message", [
                    ("system", "system", ""), ("members", "members", "d"),
                    ("msgs/member", "messages", "d"), ("deliveries/s", "pairs_per_s", ",.0f"),
                    *COMMON_COLUMNS, ("server KiB/member", "kib_per_member", ".0f"),
                    ("survives all leaving", "survives_leaving", "")]),
    "paced": ("Paced: members each sending at a steady pace", [
        ("workload", "workload", ""), ("system", "system", ""), *COMMON_COLUMNS,
        ("send late p99 ms", "late_p99_ms", ".1f")]),
    "batching": ("Batching rules: a quiet room, then the paced room at its slowest and fastest rate; each "
                 "rule and the raw relay in turn, every round repeated; the median of the repeats (min-max)", [
                     ("workload", "workload", ""), ("rule", "candidate", ""), ("what it does", "rule", ""),
                     ("alone p50 ms", "alone_p50_ms", ".1f"), ("alone p50 - raw ms", "alone_p50_over_raw_ms", ".1f"),
                     ("alone p99 ms", "alone_p99_ms", ".1f"), ("p50 ms", "p50_ms", ".1f"),
                     ("p99 ms", "p99_ms", ".1f"), ("p99 / raw", "p99_x_raw", ".1f"),
                     ("lines/datagram", "per_datagram", ".1f"), ("CPU/delivery us", "cpu_us_per_delivery", ".0f"),
                     ("CPU/delivery us by process", "cpu_us_by_process", ""),
                     ("transcripts match", "match", "")]),
    "window": (f"The server's window: one member talks at its budget ({BUDGET_MESSAGES_PER_SECOND} messages/s), "
               "the others listen; headless and window in turn, the median of the repeats (min-max)", [
                   ("server", "front_end", ""), ("p50 ms", "p50_ms", ".1f"), ("p99 ms", "p99_ms", ".1f"),
                   ("p99 / headless", "p99_x_headless", ".2f"), ("p99 of all rounds ms", "pooled_p99_ms", ".1f"),
                   ("all rounds' p99 / headless", "pooled_p99_x_headless", ".2f"),
                   ("alone p99 ms", "alone_p99_ms", ".1f"),
                   ("server CPU %", "server_cpu_pct", ".0f"), ("load average", "load", ".1f"),
                   ("transcripts match", "match", "")]),
    "storm": ("Login storm: a paced room (1 per 100 ms) while connections log in at once "
              "(default Argon2id cost)", [
                  ("system", "system", ""), ("storm logins", "storm", "d"), *COMMON_COLUMNS,
                  ("storm logged in %", "storm_in_pct", ".0f"),
                  ("storm login p50 ms", "storm_login_p50_ms", ".0f")]),
}


def render(columns: list[tuple[str, str, str]], rows: list[dict], markdown: bool = False) -> str:
    """A table, right-aligned text or markdown."""
    cells = [[format(row[key], spec) if key in row else "-" for _h, key, spec in columns]
             for row in rows]
    headings = [heading for heading, _k, _s in columns]
    if markdown:
        lines = ["| " + " | ".join(headings) + " |", "|" + "---:|" * len(headings)]
        return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in cells])
    widths = [max([len(heading), *(len(line[i]) for line in cells)])
              for i, heading in enumerate(headings)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headings, widths))]
    return "\n".join(lines + ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells])


MEASURES = {"members": members_table, "paced": paced_table, "batching": batching_table, "storm": storm_table,
            "window": window_table}


def measure_all(quick: bool, only: tuple[str, ...] = tuple(MEASURES)) -> dict[str, list[dict]]:
    """Every workload of the plan (or the tables named in ``only``); returns the rows of each table."""
    plan = PLANS[quick]
    raise_open_file_limit(2 * max(plan.member_counts) + 3 * plan.storm_logins + 256)
    random.seed(2026)
    pool = ReceiverPool()
    try:
        with tempfile.TemporaryDirectory(prefix="lab2_fanout_") as workdir:
            tables = {}
            for name in only:
                log(f"{name} runs")
                tables[name] = MEASURES[name](pool, plan, Path(workdir))
            return tables
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads: under a minute")
    parser.add_argument("--only", nargs="+", choices=tuple(MEASURES), default=tuple(MEASURES),
                        help="only these tables")
    parser.add_argument("--raw-relay", type=int, metavar="BROADCAST_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_relay:
        serve_raw_relay(args.raw_relay)
        return 0
    for name, rows in measure_all(args.quick, tuple(args.only)).items():
        title, columns = TABLES[name]
        print(f"\n{title}\n{render(columns, rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
