"""Lab 2 attacked where it once gave way: each test here is an attack that
worked on an earlier version of the kit (a member locking another out,
one address filling the room, strangers closing a login in progress, a
replayed datagram taken for the server, a room frozen by a member that
stopped reading, the server's old name taken, blank-looking padding).

Honest members sit on 127.0.0.1; an attacker uses other loopback addresses
(127.0.0.2, 127.0.1.x: all of 127.0.0.0/8 is this machine), as if from
other computers. Every wait has a deadline; no test sleeps.
"""
from __future__ import annotations

import re
import socket
import statistics
import threading
import time

import pytest

from common import net
from common.accounts import AccountStore, Argon2Cost
from common.admission import LAB2_LIMITS, NEW_CONNECTIONS_BURST_PER_ADDRESS, TOO_MANY_NEW_CONNECTIONS
from common.config import load_settings
from common.messages import (
    Goodbye,
    IgnoreUser,
    Login,
    LoginAccepted,
    LoginRejected,
    PrivateMessage,
    Register,
    RepairRequest,
    RoomKey,
    Say,
    UnignoreUser,
)
from common.session import SecureSession
from tests.procs import DEADLINE_SECONDS
from tests.raw_peer import send_queued
from tests.test_lab2 import BROADCAST, PASSWORD, Room, hash_at, quit_and_hash, raw_member, room, wait_for_seq  # noqa: F401
from tests.test_lab2_hostile import abort, connect_from, handshake_from, read_until_closed

pytestmark = pytest.mark.network


def login_from(source: str, room: Room, message) -> tuple[socket.socket, SecureSession]:
    """Handshake from ``source`` and send ``message`` (a Login or Register)."""
    sock, session = handshake_from(source, room)
    session.send(message)
    send_queued(sock, session)
    return sock, session


def outcome(sock: socket.socket, session: SecureSession):
    """The LoginAccepted or LoginRejected a login got, or None if the server
    closed the connection without either."""
    received = []
    while not any(isinstance(m, (LoginAccepted, LoginRejected)) for m in received):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        received += session.receive(data)
    return next(m for m in received if isinstance(m, (LoginAccepted, LoginRejected)))


@pytest.mark.points(2)
def test_failed_logins_from_another_address_do_not_lock_a_member_out(room):
    room.start_server()
    alice = room.join("alice")
    alice.send_line("/quit")
    assert alice.wait_exit() == 0
    # Mallory guesses from 127.0.0.2 until the lock answers her.
    for _ in range(50):
        sock, session = login_from("127.0.0.2", room, Login("alice", "not her password"))
        answer = outcome(sock, session)
        sock.close()
        assert isinstance(answer, LoginRejected), answer
        if "too many failed logins" in answer.reason:
            break
    assert "too many failed logins" in answer.reason, answer
    sock, session = login_from("127.0.0.1", room, Login("alice", PASSWORD))   # alice, right password
    answer = outcome(sock, session)
    assert isinstance(answer, LoginAccepted), answer
    sock, session = login_from("127.0.0.2", room, Login("alice", PASSWORD))   # mallory, still locked
    answer = outcome(sock, session)
    assert isinstance(answer, LoginRejected) and "too many failed logins" in answer.reason, answer


@pytest.mark.points(2)
def test_one_address_cannot_fill_the_room(room):
    room.add_setting("MAX_CLIENTS=6")     # 250 and 20 by default: the same, on a smaller scale
    room.add_setting("MAX_CLIENTS_PER_ADDRESS=3")
    server = room.start_server()
    held = []
    for i in range(6):
        sock, session = login_from("127.0.0.2", room, Register(f"sock_{i}", PASSWORD))
        answer = outcome(sock, session)
        assert isinstance(answer, LoginAccepted) == (i < 3), answer
        held.append(sock)
    wait_for_seq(server, 3)
    sock, session = login_from("127.0.0.1", room, Register("alice", PASSWORD))
    answer = outcome(sock, session)
    for held_sock in held:
        held_sock.close()
    assert isinstance(answer, LoginAccepted), answer


@pytest.mark.points(2)
def test_a_dm_to_a_very_long_name_is_answered_not_punished(room):
    server = room.start_server()
    alice = room.join("alice")
    alice.send_line("/msg " + "x" * 990 + " are you there?")
    alice.send_line("still here")
    server.wait_for_stdout(r"^#\d+ (alice: still here|\* alice left)$")
    assert any(line.endswith("alice: still here") for line in server.stdout_lines), server.output()


@pytest.mark.points(2)
def test_eight_flooding_addresses_do_not_make_the_server_too_busy_for_an_honest_login(room):
    room.add_setting("ARGON2_MEMORY_KIB=131072")   # a slow hash, so that logins queue up
    room.start_server()
    flooders = [f"127.0.0.{2 + i}" for i in range(LAB2_LIMITS.queued_logins // 8)]
    flood = [handshake_from(source, room) for source in flooders for _ in range(10)]
    member, session = handshake_from("127.0.0.1", room)
    for i, (sock, flood_session) in enumerate(flood):
        flood_session.send(Register(f"flood_{i:02}", PASSWORD))
        send_queued(sock, flood_session)
    session.send(Register("alice", PASSWORD))
    send_queued(member, session)
    answer = outcome(member, session)
    for sock, _ in flood:
        sock.close()
    assert isinstance(answer, LoginAccepted), answer


@pytest.mark.points(2)
def test_strangers_from_many_addresses_do_not_close_a_login_in_progress(room):
    room.add_setting("ARGON2_MEMORY_KIB=262144")   # about half a second a hash
    room.add_setting("ARGON2_ITERATIONS=2")
    room.start_server()
    # Two logins from elsewhere keep both workers busy, so alice's check waits
    # its turn, then takes its own half second: the window the strangers need.
    busy = [login_from("127.0.0.3", room, Register(f"busy_{i}", PASSWORD)) for i in range(2)]
    member, session = login_from("127.0.0.1", room, Register("alice", PASSWORD))
    strangers = [connect_from(f"127.0.1.{1 + i}", room.port) for i in range(LAB2_LIMITS.strangers + 20)]
    answer = outcome(member, session)
    for sock in strangers + [sock for sock, _ in busy]:
        sock.close()
    assert isinstance(answer, LoginAccepted), answer


@pytest.mark.points(2)
def test_a_stranger_replaying_a_genuine_datagram_does_not_become_the_server_for_a_new_client(room):
    server = room.start_server()
    listener = net.broadcast_receiver(room.client_broadcast_port)   # anyone may hear the room
    genuine, _source = server.receive_datagram(listener, net.MAX_DATAGRAM_RECV_BYTES)   # a heartbeat, sealed, signed
    listener.close()
    replayer = net.broadcast_sender()
    replayer.bind(("127.0.0.2", 0))
    replayer.setblocking(True)
    stop = threading.Event()

    def replay() -> None:
        for _ in range(2_000_000):         # bounded; stops as soon as bob has logged in
            if stop.is_set():
                return
            replayer.sendto(genuine, (BROADCAST, room.client_broadcast_port))

    flood = threading.Thread(target=replay, daemon=True)
    flood.start()
    bob = room.join("bob")
    wait_for_seq(bob, 1)                   # bob's history is in: he has the room key
    stop.set()
    flood.join(DEADLINE_SECONDS)
    replayer.close()
    server.send_line("after the replay")
    wait_for_seq(bob, 2)
    quit_and_hash(bob)
    opened = int(bob.wait_for_stderr(r"^datagrams: (\d+) opened").group(1))
    assert opened >= 2, bob.output()       # the real server's datagrams, not one replay


def member_that_will_not_read(source: str, room: Room, name: str) -> tuple[socket.socket, SecureSession]:
    """Register ``name`` from ``source`` with a tiny receive buffer, and never
    read: what the server sends it stays queued in the server."""
    settings = load_settings(room.env_file, create=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: a small window
    sock.settimeout(DEADLINE_SECONDS)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", room.port))
    session = SecureSession.client(settings.psk, settings.server_public_key)
    send_queued(sock, session)
    while not session.established:
        session.receive(sock.recv(65536))
    session.send(Register(name, PASSWORD))
    send_queued(sock, session)
    return sock, session


@pytest.mark.points(2)
def test_members_that_stop_reading_are_dropped_without_freezing_the_room(room):
    server = room.start_server()
    for i in range(500):                  # a long log: half a megabyte per full repair
        server.send_line(f"{i:03} " + "x" * 990)
    wait_for_seq(server, 500)
    alice = room.join("alice")
    wait_for_seq(alice, 501)
    silent = [member_that_will_not_read("127.0.0.2", room, f"silent_{i}") for i in range(4)]
    for i in range(4):
        server.wait_for_stdout(rf"^#\d+ \* silent_{i} joined$")
    # The room's own datagrams (a heartbeat 4 times a second) pace the silent
    # members: at each, every one asks for the whole log again, well inside
    # its request budget, and reads nothing. The kernel holds a few MB for
    # each; past that, the server queues 1 MiB more and then drops it.
    clock = net.broadcast_receiver(room.client_broadcast_port)
    clock.setblocking(True)
    clock.settimeout(DEADLINE_SECONDS)
    dropped = r"silent_\d .*stopped reading"
    for _ in range(400):                  # bounded: about 30 datagrams are needed
        if sum(bool(re.search(dropped, line)) for line in server.stderr_lines) == len(silent):
            break
        clock.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
        for sock, session in silent:
            session.send(RepairRequest(0))
            try:
                send_queued(sock, session)
            except OSError:               # already dropped
                pass
    clock.close()
    server.wait_for_stderr(dropped, count=len(silent))
    server.send_line("after the silent ones")
    alice.wait_for_stdout(r"^#\d+ server: after the silent ones$")
    for sock, _ in silent:
        sock.close()
    assert not any(line.startswith("! no room datagram") for line in alice.stderr_lines), alice.output()


# --- What held: the attacks below change nothing; they guard against a regression. ---

@pytest.mark.points(1)
def test_odd_requests_and_abandoned_logins_neither_crash_the_server_nor_stop_the_room(room):
    server = room.start_server()
    alice = room.join("alice")
    settings = load_settings(room.env_file, create=False)
    # Abandoned at every step of the login, some with a reset, some with a FIN.
    for step in range(6):
        sock = connect_from("127.0.0.2", room.port)
        session = SecureSession.client(settings.psk, settings.server_public_key)
        if step >= 1:
            sock.sendall(bytes(session.outgoing[:20]))            # half the first handshake record
        if step >= 2:
            sock.sendall(bytes(session.outgoing[20:]))
            session.outgoing.clear()
            while not session.established:
                session.receive(sock.recv(65536))
        if step >= 3:
            session.send(Register(f"quitter_{step}", PASSWORD))
            record = bytes(session.outgoing)
            sock.sendall(record[:5] if step == 3 else record)       # half a Login, or all of it
            session.outgoing.clear()
        if step == 5:                                              # Goodbye while the password is checked
            session.send(Goodbye("changed my mind"))
            send_queued(sock, session)
        (abort if step % 2 else socket.socket.close)(sock)
    # Messages that have no business arriving, each on its own member session.
    for i, message in enumerate([RoomKey(1, bytes(32), bytes(32)), LoginAccepted("x", "y"),
                                 Login("mallory", PASSWORD)]):
        sock, session, _key = raw_member(room, f"wrong_{i}")
        session.send(message)
        send_queued(sock, session)
        assert read_until_closed(sock, session) is not None
        sock.close()
    # Odd but well-formed requests: each earns a notice or an answer, never a drop.
    sock, session, _key = raw_member(room, "mallory")
    odd = [IgnoreUser("x" * 1000), UnignoreUser("\u00e9" * 500), IgnoreUser("ALICE "),
           RepairRequest(2**64 - 1), PrivateMessage("mallory", "\u0000", "hi"),
           PrivateMessage("mallory", "", "hi"), PrivateMessage("alice", "alice", "forged sender"),
           PrivateMessage("mallory", "\uff21\uff2c\uff29\uff23\uff25", "full-width alice")]
    for message in odd:
        session.send(message)
    session.send(Say("mallory is still here"))
    send_queued(sock, session)
    server.wait_for_stdout(r"^#\d+ mallory: mallory is still here$")
    alice.wait_for_stdout(r"^@mallory -> alice: full-width alice$")
    assert not any("forged sender" in line for line in alice.stdout_lines)
    sock.close()
    alice.send_line("unbothered")
    server.wait_for_stdout(r"^#\d+ alice: unbothered$")
    assert quit_and_hash(alice)
    assert not any("Traceback" in line for line in server.stderr_lines), server.output()


@pytest.mark.points(2)
def test_a_member_cannot_take_the_servers_name_once_the_server_renames(room):
    server = room.start_server()
    sock, session = login_from("127.0.0.2", room, Register("server", PASSWORD))
    refused = outcome(sock, session)
    sock.close()
    assert isinstance(refused, LoginRejected) and "already in the room" in refused.reason
    server.send_line("/nick teacher")
    wait_for_seq(server, 1)
    sock, session = login_from("127.0.0.2", room, Login("server", PASSWORD))
    answer = outcome(sock, session)
    sock.close()
    assert not isinstance(answer, LoginAccepted), answer


@pytest.mark.points(3)
def test_a_name_taken_before_its_account_existed_goes_back_and_its_owner_gets_in_and_gets_its_dms(room):
    server = room.start_server()
    alice, mallory = room.join("alice"), room.join("mallory")
    mallory.send_line("/nick dave")                 # dave has no account yet
    mallory.send_line("hi, I am dave")
    server.wait_for_stdout(r"^#4 dave: hi, I am dave$")
    dave = room.join("dave")                         # registers: once refused "dave is already in the room"
    for screen in (server, alice, mallory, dave):
        screen.wait_for_stdout(r"^#5 \* dave is mallory again: dave is an account's name$")
        screen.wait_for_stdout(r"^#6 \* dave joined$")
    alice.send_line("/msg dave is it you?")
    dave.wait_for_stdout(r"^@alice -> dave: is it you\?$")
    mallory.send_line("/nick dave")
    mallory.wait_for_stderr(r"^! dave is taken$")
    mallory.send_line("still me")                    # said after the DM was delivered: it would be on screen
    for screen in (server, alice, dave):
        screen.wait_for_stdout(r"^#7 mallory: still me$")
    wait_for_seq(mallory, 7)
    assert not any("is it you" in line for line in mallory.stdout_lines), mallory.output()
    alice.send_line("/who")
    alice.wait_for_stderr(r"^in the room: server, alice, dave, mallory$")
    assert hash_at(alice, 7) == hash_at(dave, 7) == hash_at(mallory, 7)   # dave's #1-#5 came as history


@pytest.mark.points(1)
def test_a_name_registered_in_lab1_while_a_member_shows_it_in_the_room_is_given_back(room):
    server = room.start_server()
    alice, mallory = room.join("alice"), room.join("mallory")
    mallory.send_line("/nick dave")
    alice.wait_for_stdout(r"^#3 \* mallory is now dave$")
    # dave registers with Lab 1's server, which shares DB_PATH; dave never comes to the room.
    store = AccountStore(room.tmp_path / "chat.db", Argon2Cost(memory_kib=8, iterations=1))
    store.register("dave", PASSWORD)
    store.close()
    alice.send_line("/msg dave are you dave?")      # addresses the account dave, who is not here
    alice.wait_for_stderr(r"^! your message to dave was not delivered$")
    mallory.send_line("after the DM")
    for screen in (server, alice, mallory):
        screen.wait_for_stdout(r"^#4 \* dave is mallory again: dave is an account's name$")
        screen.wait_for_stdout(r"^#5 mallory: after the DM$")
    assert not any("are you dave" in line for line in mallory.stdout_lines), mallory.output()


@pytest.mark.points(2)
def test_blank_looking_padding_cannot_push_a_fake_line_onto_its_own_row(room):
    server = room.start_server()
    bob = room.join("bob")
    sock, session, _key = raw_member(room, "mallory")    # "#3 mallory: hi" is 14 columns wide
    session.send(Say("hi" + "\u2800" * (80 - 14) + "#4 server: the exam is cancelled"))
    session.send(Say("bye"))
    send_queued(sock, session)
    server.wait_for_stdout(r"^#\d+ mallory: bye$")
    sock.close()
    wait_for_seq(bob, 3)
    assert not any("the exam is cancelled" in line for line in bob.stdout_lines), bob.output()


@pytest.mark.points(1)
def test_logins_abandoned_while_their_passwords_are_checked_leave_the_queue_working(room):
    room.add_setting("ARGON2_MEMORY_KIB=65536")    # slow enough that most are still queued
    room.start_server()
    abandoned = [login_from(f"127.0.0.{2 + i % 5}", room, Register(f"gone_{i:02}", PASSWORD))
                 for i in range(40)]
    for sock, _ in abandoned:                       # all at once, with resets
        abort(sock)
    alice = room.join("alice")                      # the workers and the queue are free again
    alice.send_line("the queue works")
    alice.wait_for_stdout(r"^#\d+ alice: the queue works$")
    bob = room.join("bob")
    assert quit_and_hash(bob)


class ReopeningStrangers:
    """A stranger without the key at ``addresses`` loopback addresses, one
    connection each, closing and reopening it round after round in a thread;
    bounded by ``max_rounds``. ``rounds`` counts the rounds done."""

    def __init__(self, room: Room, addresses: list[str], max_rounds: int) -> None:
        self.room, self.addresses, self.max_rounds = room, addresses, max_rounds
        self.rounds = 0
        self.round_done = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        held: dict[str, socket.socket] = {}
        while not self.stop.is_set() and self.rounds < self.max_rounds:
            for source in self.addresses:
                if source in held:
                    held.pop(source).close()
                try:
                    held[source] = connect_from(source, self.room.port)
                except OSError:   # the server's backlog was full: this one waits for the next round
                    pass
            with self.round_done:
                self.rounds += 1
                self.round_done.notify_all()
        for sock in held.values():
            sock.close()

    def wait_rounds(self, more: int) -> None:
        """Wait until ``more`` further rounds are done (or the attack is over)."""
        with self.round_done:
            target = self.rounds + more
            assert self.round_done.wait_for(lambda: self.rounds >= target or not self.thread.is_alive(),
                                            DEADLINE_SECONDS)

    def end(self) -> None:
        self.stop.set()
        self.thread.join(DEADLINE_SECONDS)


@pytest.mark.points(3)
def test_strangers_reopening_from_200_addresses_never_evict_a_client_that_proved_the_key(room):
    room.start_server()
    strangers = None

    def logins(names: list[str]) -> int:
        """Handshake; let the strangers open more connections than the server holds for
        strangers in all; then log in. How many were accepted."""
        accepted = 0
        for name in names:
            sock, session = handshake_from("127.0.0.1", room)
            if strangers is not None:
                strangers.wait_rounds(2)   # 400 newer connections than ours, one per address
            session.send(Register(name, PASSWORD))
            send_queued(sock, session)
            accepted += isinstance(outcome(sock, session), LoginAccepted)
            sock.close()
        return accepted

    before = logins([f"before_{i}" for i in range(4)])
    strangers = ReopeningStrangers(room, [f"127.0.2.{1 + i}" for i in range(200)], max_rounds=40)
    strangers.wait_rounds(1)
    during = logins([f"during_{i}" for i in range(4)])
    strangers.end()
    assert before == during == 4


@pytest.mark.points(2)
def test_a_replayed_first_handshake_record_gets_no_handshake(room):
    server = room.start_server()
    settings = load_settings(room.env_file, create=False)
    client = SecureSession.client(settings.psk, settings.server_public_key)
    first_record = bytes(client.outgoing)          # sniffed on its way to the server
    honest = connect_from("127.0.0.1", room.port)
    send_queued(honest, client)
    while not client.established:
        client.receive(honest.recv(65536))
    answered = 0
    for _ in range(NEW_CONNECTIONS_BURST_PER_ADDRESS // 2):   # the same record, again, from elsewhere
        replay = connect_from("127.0.0.2", room.port)
        replay.sendall(first_record)
        answered += answers(replay)                # the server's handshake record 2, if any
        replay.close()
    assert answered == 0
    client.send(Register("alice", PASSWORD))       # the honest client goes on undisturbed
    send_queued(honest, client)
    assert isinstance(outcome(honest, client), LoginAccepted)
    honest.close()
    assert not any("Traceback" in line for line in server.stderr_lines), server.output()


def answers(sock: socket.socket) -> bool:
    """Whether the server sends anything before it closes the connection. Its first bytes
    say so: a server that answered would then hold the connection open for the rest of the
    handshake's deadline, which a broken server's test need not wait out for each replay."""
    try:
        return bool(sock.recv(65536))   # b"": closed without a word
    except ConnectionResetError:   # closed with our record unread: a reset is a close too
        return False


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection."""
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:   # closed with our record unread: a reset is a close too
        pass
    return received


@pytest.mark.points(2)
def test_forged_first_records_from_one_address_are_refused_past_a_burst_and_members_still_log_in(room):
    server = room.start_server()
    forged = (48).to_bytes(2, "big") + bytes(48)   # a first handshake record made without the key
    for _ in range(20 * NEW_CONNECTIONS_BURST_PER_ADDRESS):
        sock = connect_from("127.0.0.2", room.port)
        try:
            sock.sendall(forged)
        except (BrokenPipeError, ConnectionResetError):   # refused: closed before we could send
            pass
        read_all(sock)
        sock.close()
    server.wait_for_stderr(rf"^refused a connection from 127\.0\.0\.2:\d+: {re.escape(TOO_MANY_NEW_CONNECTIONS)}$")
    sock, session = login_from("127.0.0.1", room, Register("alice", PASSWORD))   # another address: in
    assert isinstance(outcome(sock, session), LoginAccepted)
    sock.close()


class LeaveStorm:
    """One student logging in and out on 8 connections from 127.0.0.2, as fast
    as the server lets it: every logout is a leave, and a leave asks for a new
    room key. Runs until ``stop()``."""

    def __init__(self, room: Room, connections: int = 8) -> None:
        self.room, self.failure = room, None
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(f"storm_{i}",), daemon=True)
                         for i in range(connections)]
        for thread in self._threads:
            thread.start()

    def _run(self, name: str) -> None:
        try:
            while not self._stopping.is_set():
                sock, session = login_from("127.0.0.2", self.room, Register(name, PASSWORD))   # logs in again
                assert isinstance(outcome(sock, session), LoginAccepted)
                sock.close()   # a leave
        except (AssertionError, OSError) as error:   # said by stop(), in the test's thread
            self.failure = error

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(DEADLINE_SECONDS)
        assert self.failure is None, self.failure


def seen_by(member, sock: socket.socket, session: SecureSession, text: str) -> float:
    """Seconds from a raw member's Say to its numbered line on ``member``'s screen:
    the server's turn, the datagram, and the member opening it."""
    started = time.perf_counter()
    session.send(Say(text))
    send_queued(sock, session)
    member.wait_for_stdout(rf"^#\d+ carol: {re.escape(text)}$")
    return time.perf_counter() - started


def storm_leaves(server) -> int:
    return sum(re.match(r"#\d+ \* storm_\d left$", line) is not None for line in server.stdout_lines)


@pytest.mark.points(2)
def test_a_leave_storm_neither_rekeys_the_room_past_its_members_nor_slows_them_much(room):
    room.add_setting("MAX_CLIENTS_PER_ADDRESS=30")
    room.add_setting("MAX_MESSAGES_PER_SECOND=1000")   # carol says her lines as fast as bob sees them
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    sock, session, _ = raw_member(room, "carol")   # says the lines; its room key deliveries wait unread
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # each line at once, as the kit's client sends
    before = [seen_by(bob, sock, session, f"before {i}") for i in range(15)]
    storm = LeaveStorm(room)
    server.wait_for_stdout(r"^#\d+ \* storm_\d left$", count=16)   # the storm is on
    leaves_before = storm_leaves(server)
    during = [seen_by(bob, sock, session, f"during {i}") for i in range(30)]
    assert storm_leaves(server) >= leaves_before + 8, server.output()   # the storm went on while carol talked
    storm.stop()
    for member in (alice, bob):
        quit_and_hash(member)
        opened, rejected = map(int, re.search(r"^datagrams: (\d+) opened, (\d+) rejected",
                                              "\n".join(member.stderr_lines), re.MULTILINE).groups())
        assert opened > 0 and rejected == 0, member.output()   # no datagram of an epoch it had no key for
    ratio = statistics.median(during) / statistics.median(before)
    assert ratio < 10, f"bob saw carol's lines {ratio:.1f} times as late during the storm"
