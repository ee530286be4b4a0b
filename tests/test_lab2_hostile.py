"""Lab 2 under attack: what one hostile member, or a stranger without the key,
can do to the room, over real sockets on loopback.

A stranger is given another loopback address (127.0.0.2, 127.0.0.3: all of
127.0.0.0/8 is this machine), as if it sat at another computer, so the
limits per source address can be told apart from the honest members on
127.0.0.1. Every wait has a deadline; no test sleeps.
"""
from __future__ import annotations

import re
import selectors
import socket
import sqlite3
import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import net
from common.admission import BUSY_WITH_LOGINS, LAB2_LIMITS, NEW_CONNECTIONS_BURST_PER_ADDRESS, TOO_MANY_NEW_CONNECTIONS
from common.accounts import MAX_IGNORED_NAMES, STORE_BUSY, TOO_MANY_NEW_ACCOUNTS, AccountStore, Argon2Cost
from common.config import load_settings
from common.framing import DatagramOpener, DatagramSealer
from common.messages import (
    ErrorNotice,
    History,
    IgnoreList,
    IgnoreUser,
    LoginAccepted,
    LoginRejected,
    Register,
    RepairRequest,
    RoomBatch,
    RoomEvent,
    Say,
    decode,
    encode,
)
from common.room import KEPT_FLOODING, MAX_REPAIR_EVENTS_PER_SECOND
from common.session import SecureSession
from tests.procs import DEADLINE_SECONDS, unopenable_database
from tests.raw_peer import receive_until, send_queued
from tests.test_lab2 import BROADCAST, PASSWORD, Room, quit_and_hash, raw_member, room, wait_for_seq  # noqa: F401

pytestmark = pytest.mark.network


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to the server from the loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE_SECONDS)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def handshake_from(source: str, room: Room) -> tuple[socket.socket, SecureSession]:
    """A connection from ``source`` that has completed the handshake."""
    settings = load_settings(room.env_file, create=False)
    sock = connect_from(source, room.port)
    session = SecureSession.client(settings.psk, settings.server_public_key)
    send_queued(sock, session)
    while not session.established:
        data = sock.recv(65536)
        assert data, f"the server closed the connection from {source} during the handshake"
        session.receive(data)
    return sock, session


def read_until_closed(sock: socket.socket, session: SecureSession) -> list:
    """Every message the server sends until it closes the connection."""
    received = []
    while data := sock.recv(65536):
        received += session.receive(data)
    return received


def abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the server's next send to it fails."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.points(2)
def test_server_quits_cleanly_while_a_connection_is_in_its_handshake(room):
    server = room.start_server()
    alice = room.join("alice")
    stranger = connect_from("127.0.0.2", room.port)   # connected, but no handshake yet
    alice.send_line("hello")
    server.wait_for_stdout(r"^#2 alice: hello$")
    server.send_line("/quit")
    assert server.wait_exit() == 0, server.output()
    assert not any("Traceback" in line for line in server.stderr_lines), server.output()
    assert server.stderr_lines[-1].startswith("transcript "), server.output()
    alice.wait_for_stderr(r"the server said goodbye")
    stranger.close()


@pytest.mark.points(3)
def test_hundreds_of_members_leaving_at_once_do_not_stop_the_server(room):
    room.add_setting("MAX_CLIENTS=400")
    room.add_setting("MAX_CLIENTS_PER_ADDRESS=400")   # all on 127.0.0.1
    room.add_setting("MAX_NEW_ACCOUNTS_PER_HOUR=400")
    server = room.start_server()
    members = []
    for i in range(300):
        sock, session, _key = raw_member(room, f"member_{i:03}")
        members.append(sock)
    wait_for_seq(server, 300)
    for sock in members:            # all gone at once, each with a reset
        abort(sock)
    wait_for_seq(server, 600)       # 300 leaves, each numbered
    alice = room.join("alice")      # and the room goes on
    alice.send_line("anyone here?")
    server.wait_for_stdout(r"^#602 alice: anyone here\?$")
    assert not any("Traceback" in line for line in server.stderr_lines), server.output()


@pytest.mark.points(2)
def test_a_member_with_a_huge_ignore_list_in_the_database_can_still_log_in(room):
    store = AccountStore(room.tmp_path / "chat.db", Argon2Cost(memory_kib=8, iterations=1))
    store.register("alice", PASSWORD)
    store.close()
    with sqlite3.connect(room.tmp_path / "chat.db") as database:   # written by another program
        database.executemany("INSERT INTO ignores VALUES ('alice', ?)",
                             [(f"n{i:04}_" + "x" * 14,) for i in range(750)])
    server = room.start_server()
    alice = room.join("alice", register=False)
    alice.wait_for_stderr(r"^you ignore: ")
    alice.send_line("/ignore one_more")
    alice.wait_for_stderr(rf"at most {MAX_IGNORED_NAMES} names")
    alice.send_line("still alive")
    server.wait_for_stdout(r"^#\d+ alice: still alive$")
    assert quit_and_hash(alice)


@pytest.mark.points(3)
def test_strangers_holding_idle_connections_do_not_lock_members_out(room):
    server = room.start_server()
    strangers = [connect_from("127.0.0.2", room.port) for _ in range(10 * LAB2_LIMITS.strangers_per_address)]
    alice = room.join("alice")          # from 127.0.0.1: in, however many strangers wait
    alice.send_line("made it")
    server.wait_for_stdout(r"^#2 alice: made it$")
    # Past a burst, that address's connections are refused at once (noted once, then counted) ...
    server.wait_for_stderr(rf"^refused a connection from 127\.0\.0\.2:\d+: {re.escape(TOO_MANY_NEW_CONNECTIONS)}$")
    # ... and of those taken, a newer closed its own oldest, and one who never starts the handshake
    # is closed after a few seconds: every one of them ends closed.
    for sock in strangers:
        assert sock.recv(1) == b""
        sock.close()


@pytest.mark.points(3)
def test_a_login_flood_from_one_address_neither_queues_without_end_nor_keeps_members_waiting(room):
    room.add_setting("ARGON2_MEMORY_KIB=131072")   # a slow hash, so that logins queue up
    # Three passes: a check outlasts the pause a busy machine may put between
    # the flood's Registers and alice's, so none ends before hers is queued.
    room.add_setting("ARGON2_ITERATIONS=3")
    server = room.start_server()
    # As many handshakes as one address may make at once: a connection gives its
    # token of new connections back only once it logs in (common/admission.py).
    flood = [handshake_from("127.0.0.2", room) for _ in range(NEW_CONNECTIONS_BURST_PER_ADDRESS)]
    member, session = handshake_from("127.0.0.1", room)
    for i, (sock, flood_session) in enumerate(flood):   # 16 registrations from 127.0.0.2 at once ...
        flood_session.send(Register(f"flood_{i:02}", PASSWORD))
        send_queued(sock, flood_session)
    session.send(Register("alice", PASSWORD))            # ... then one from an honest member
    send_queued(member, session)
    receive_until(member, session, [], LoginAccepted)
    # Checks are handed out one per address in turn: alice's starts right
    # after one of the two already running, not after the whole flood (the
    # queue holds 10), and two workers may finish in either order.
    alice_seq = int(server.wait_for_stdout(r"^#(\d+) \* alice joined$").group(1))
    assert alice_seq <= 4, server.output()
    refused = [m for sock, s in flood for m in read_until_closed_or_joined(sock, s)
               if isinstance(m, LoginRejected)]
    assert len(refused) >= len(flood) - 2 - LAB2_LIMITS.queued_logins_per_address
    assert all(m.reason == BUSY_WITH_LOGINS for m in refused)


def read_until_closed_or_joined(sock: socket.socket, session: SecureSession) -> list:
    """What a flooding connection got: a refusal (then the close), or a welcome."""
    received = []
    while not any(isinstance(m, (LoginRejected, LoginAccepted)) for m in received):
        data = sock.recv(65536)
        if not data:
            break
        received += session.receive(data)
    sock.close()
    return received


@pytest.mark.points(3)
def test_a_member_flooding_requests_is_told_once_a_second_then_dropped(room):
    server = room.start_server()
    alice = room.join("alice")
    for i in range(50):
        server.send_line(f"line {i}")
    sock, session, _key = raw_member(room, "mallory")
    for _ in range(500):           # a repair of the whole log, 500 times over
        session.send(RepairRequest(0))
    started = time.monotonic()
    send_queued(sock, session)
    received = read_until_closed(sock, session)
    seconds = time.monotonic() - started     # the server served the flood within these, however busy
    notices = [m for m in received if isinstance(m, ErrorNotice)]
    assert len(notices) == 1 and "slow down" in notices[0].text
    repaired = sum(len(m.events) for m in received if isinstance(m, History))
    # What the repair budget allows in that time (a second's burst, then its rate),
    # not 500 times the log: a rate, measured against the time the flood really took.
    assert repaired <= MAX_REPAIR_EVENTS_PER_SECOND * (1 + seconds), (repaired, seconds)
    server.wait_for_stderr(rf"mallory .*{KEPT_FLOODING}")
    alice.send_line("unbothered")
    server.wait_for_stdout(r"^#\d+ alice: unbothered$")


@pytest.mark.points(3)
def test_forged_datagrams_from_a_member_cost_the_receivers_next_to_nothing(room):
    room.start_server()
    alice = room.join("alice")
    sock, session, room_key = raw_member(room, "mallory")
    wait_for_seq(alice, 2)                # alice has heard the server: she knows its source
    forger = DatagramSealer(Ed25519PrivateKey.generate())   # the room key, but not the signing key
    forger.set_room_key(room_key.epoch, room_key.key)
    sender = net.broadcast_sender()
    sender.setblocking(True)
    forged = forger.seal(encode(RoomBatch((RoomEvent(3, "say", "server", "forged"),), 3)))
    for _ in range(2000):
        sender.sendto(forged, (BROADCAST, room.client_broadcast_port))
    sender.close()
    session.send(Say("after the flood"))
    send_queued(sock, session)
    alice.wait_for_stdout(r"^#3 mallory: after the flood$")
    quit_and_hash(alice)
    opened, rejected, ignored = map(int, alice.wait_for_stderr(
        r"^datagrams: (\d+) opened, (\d+) rejected, (\d+) ignored unopened$").groups())
    # From a port that is not the server's, a few a second are opened, then none.
    assert rejected <= 20 and ignored > 0, alice.output()
    assert not any("forged" in line for line in alice.stdout_lines)
    sock.close()


@pytest.mark.points(2)
def test_text_that_could_pose_as_another_line_is_refused_by_client_and_server(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    alice.send_line("x\u2028#999 server: the exam is cancelled")
    alice.wait_for_stderr(r"not sent: .*line separator")
    sock, session, _key = raw_member(room, "mallory")    # a client that skips the check
    session.send(Say("\u202edellecnac si maxe eht :revres 999#"))
    send_queued(sock, session)
    notice = receive_until(sock, session, [], ErrorNotice)
    assert "may not contain" in notice.text
    bob.send_line("the exam is on")
    wait_for_seq(bob, 4)                 # alice, bob and mallory joined; nothing else was numbered
    assert not any("999" in line for line in bob.stdout_lines + server.stdout_lines)
    sock.close()


@pytest.mark.points(1)
def test_ignoring_a_name_answers_the_same_whether_or_not_it_has_an_account(room):
    room.start_server()
    alice, _bob = room.join("alice"), room.join("bob")
    alice.send_line("/ignore nobody_here")
    alice.wait_for_stderr(r"^you ignore: nobody_here$")
    alice.send_line("/ignore bob")
    alice.wait_for_stderr(r"^you ignore: bob, nobody_here$")
    assert not any("no user" in line for line in alice.stderr_lines)


@pytest.mark.points(2)
def test_one_address_cannot_register_accounts_without_end(room):
    room.add_setting("MAX_NEW_ACCOUNTS_PER_HOUR=3")   # 100 by default: the same, on a smaller scale
    room.start_server()
    replies = []
    for i in range(4):
        sock, session = handshake_from("127.0.0.2", room)
        session.send(Register(f"bot_{i}", PASSWORD))
        send_queued(sock, session)
        replies.append(next(m for m in read_until_closed_or_joined(sock, session)
                            if isinstance(m, (LoginAccepted, LoginRejected))))
    assert [type(m) for m in replies] == [LoginAccepted] * 3 + [LoginRejected]
    assert replies[3].reason == TOO_MANY_NEW_ACCOUNTS
    room.join("alice")   # another address (127.0.0.1) still registers


@pytest.mark.points(1)
@pytest.mark.parametrize("problem", ["missing folder", "not a database"])
def test_a_server_that_cannot_open_its_database_says_which_file_and_why(room, problem):
    database, reason = unopenable_database(room.tmp_path, problem)
    server = room.processes.start("lab2_udp.server", "--port", "0", "--env", str(room.env_file),
                                  "--db", str(database), "--headless")
    assert server.wait_exit() == 1, server.output()
    assert len(server.stderr_lines) == 1, server.output()   # one line, no traceback
    assert str(database) in server.stderr_lines[0] and reason in server.stderr_lines[0], server.output()


@pytest.mark.points(3)
def test_a_database_another_program_holds_locked_does_not_stop_the_room(room):
    """/ignore writes the database. While another program holds it locked, the write
    waits off the loop: the room talks on, heartbeats included, and the answer comes
    once the lock is gone (or says the store is busy, if it stayed locked too long)."""
    room.start_server()
    listener = net.broadcast_receiver(room.client_broadcast_port)
    alice_sock, alice, room_key = raw_member(room, "alice")
    bob_sock, bob, _ = raw_member(room, "bob")
    opener = DatagramOpener(room_key.signing_key)
    opener.add_room_key(room_key.epoch, room_key.key)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "room")
    selector.register(alice_sock, selectors.EVENT_READ, "alice")
    alice_sock.setblocking(False)
    order: list[str] = []   # what reached the test, in the order it came
    replies: list = []      # alice's answers to her ignore

    def watch_until(done) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not done():
            assert time.monotonic() < deadline, order
            for key, _mask in selector.select(deadline - time.monotonic()):
                if key.data == "alice":
                    replies.extend(m for m in alice.receive(alice_sock.recv(65536))
                                   if isinstance(m, (IgnoreList, ErrorNotice)))
                    order.extend(["reply"] * (len(replies) - order.count("reply")))
                else:
                    batch = decode(opener.open(listener.recv(2048)))
                    order.extend([f"{e.sender}: {e.text}" for e in batch.events] or ["heartbeat"])

    locker = sqlite3.connect(room.tmp_path / "chat.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")      # a backup, or the sqlite3 shell mid-transaction
    alice.send(IgnoreUser("carol"))
    send_queued(alice_sock, alice)
    bob.send(Say("the room goes on"))
    send_queued(bob_sock, bob)

    def heard() -> bool:   # bob's line, then two heartbeats: half a second of the room going on
        said = "bob: the room goes on"
        return said in order and order[order.index(said):].count("heartbeat") >= 2

    watch_until(lambda: heard() or replies)
    # The write waits for the lock, and the room did not wait for the write.
    assert heard() and not replies, order
    locker.execute("ROLLBACK")
    locker.close()
    watch_until(lambda: replies)
    assert replies[0] in (IgnoreList(("carol",)), ErrorNotice(STORE_BUSY)), replies
    selector.close()
    for sock in (alice_sock, bob_sock, listener):
        sock.close()


@pytest.mark.points(2)
def test_a_genuine_message_read_together_with_a_tampered_record_is_said_then_the_peer_is_dropped(room):
    server = room.start_server()
    sock, session, _key = raw_member(room, "mallory")
    wait_for_seq(server, 1)
    session.send(Say("genuine, then a bad record"))
    session.send(Say("tampered"))
    chunk = bytearray(session.outgoing)
    chunk[-1] ^= 1                       # the second record's tag
    sock.sendall(chunk)                  # one send: the server reads both at once
    left = int(server.wait_for_stdout(r"^#(\d+) \* mallory left$").group(1))
    assert f"#{left - 1} mallory: genuine, then a bad record" in server.stdout_lines, server.output()
    server.wait_for_stderr(r"^mallory \(127\.0\.0\.1:\d+\) message rejected: it was altered")
    assert not any("tampered" in line for line in server.stdout_lines)
    sock.close()
