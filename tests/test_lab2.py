"""Lab 2 through its command-line contract: a server and several clients as
processes, the room heard by real UDP broadcast on 127.255.255.255.

Every process is killed at teardown; every wait has a deadline.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import net
from common.accounts import AccountStore, Argon2Cost
from common.config import load_settings
from common.framing import DatagramSealer
from common.messages import RoomBatch, RoomEvent, RoomKey, Say, encode
from lab2_udp.lossy_relay import FaultPlan, LossyRelay
from tests.procs import (
    DEADLINE_SECONDS, ROOT, SERVER_START_SECONDS, Processes, RoleProcess, attachment, create_test_env_file, free_port,
    assert_heard_the_room_by_datagram, has_ipv6_loopback,
)
from tests.raw_peer import receive_until, register_raw

SERVER, CLIENT = "lab2_udp.server", "lab2_udp.client"
PASSWORD = "correct horse battery"
BROADCAST = "127.255.255.255"
GROUP = net.LOOPBACK_GROUP   # the group a server picks where loopback cannot broadcast

pytestmark = pytest.mark.network


def free_udp_port() -> int:
    """A UDP port nobody uses now (see procs.free_port)."""
    return free_port(socket.SOCK_DGRAM)


class Room:
    """One Lab 2 server's files and ports, and helpers to start its roles."""

    def __init__(self, tmp_path, processes: Processes) -> None:
        self.tmp_path = tmp_path
        self.processes = processes
        self.env_file = create_test_env_file(tmp_path / ".env")
        self.server_broadcast_port = self.client_broadcast_port = free_udp_port()
        self.host, self.port = "127.0.0.1", 0
        self.own_settings = False

    def add_setting(self, line: str) -> None:
        self.own_settings = True
        with open(self.env_file, "a", encoding="utf-8") as env_file:
            env_file.write(line + "\n")

    def start_server(self, *args: str, headless: bool = True, stdout=subprocess.PIPE) -> RoleProcess:
        if attachment():   # pytest --attach: the student's server, started by hand
            server = self.processes.attach(SERVER, bool(args or not headless or self.own_settings))
            self.env_file = shutil.copy(server.env_file, self.tmp_path / "attached.env")
            self.host, self.port = server.host, server.port
            self.client_broadcast_port = load_settings(self.env_file, create=False).broadcast_port
            return server
        server = self.processes.start(
            SERVER, "--host", "127.0.0.1", "--port", "0", "--env", str(self.env_file),
            "--db", str(self.tmp_path / "chat.db"), "--broadcast-addr", BROADCAST,
            "--broadcast-port", str(self.server_broadcast_port), *(["--headless"] if headless else []), *args,
            stdout=stdout)
        self.port = int(server.wait_for_stderr(r"^listening on 127\.0\.0\.1:(\d+), broadcasting",
                                               timeout=SERVER_START_SECONDS).group(1))
        return server

    def start_client(self, name: str, *, register: bool = True, password: str = PASSWORD,
                     headless: bool = True, env: dict[str, str | None] | None = None) -> RoleProcess:
        """Start a client, without waiting for its login; ``env`` as Processes.start takes it."""
        return self.processes.start(
            CLIENT, "--host", self.host, "--port", str(self.port), "--name", name,
            "--env", str(self.env_file), "--broadcast-port", str(self.client_broadcast_port),
            *(["--register"] if register else []), *(["--headless"] if headless else []),
            env={"CHAT_PASSWORD": password, **(env or {})})

    def join(self, name: str, **options) -> RoleProcess:
        """Start a client and wait until it is in the room."""
        client = self.start_client(name, **options)
        client.wait_for_stderr(rf"^logged in as {name}$")
        return client


@pytest.fixture
def room(tmp_path):
    with Processes() as processes:
        yield Room(tmp_path, processes)


def room_lines(process: RoleProcess) -> list[str]:
    """The room part of a screen: lines that start with '#'."""
    return [line for line in process.stdout_lines if line.startswith("#")]


def wait_for_seq(process: RoleProcess, seq: int) -> None:
    process.wait_for_stdout(rf"^~?#{seq} |^~#\d+-#{seq} ")   # a hidden run's line ends at its last number


def hash_at(process: RoleProcess, count: int) -> str:
    """The screen's transcript hash once it shows ``count`` room events (/hash)."""
    wait_for_seq(process, count)
    process.send_line("/hash")
    return process.wait_for_stderr(rf"^transcript (\w+) {count}$").group(1)


def quit_and_hash(process: RoleProcess) -> str:
    """Quit cleanly; return the 'transcript HASH COUNT' line's HASH and COUNT."""
    process.send_line("/quit")
    assert process.wait_exit() == 0, process.output()
    last = process.stderr_lines[-1].split()
    assert last[0] == "transcript", process.output()
    return " ".join(last[1:])


@pytest.mark.points(5)
def test_five_clients_and_the_server_show_the_same_transcript(room):
    server = room.start_server()
    names = ["alice", "bob", "carol", "dave", "erin"]
    clients = [room.join(name) for name in names]
    for client, name in zip(clients, names):
        client.send_line(f"hello from {name}")
    server.send_line("welcome, all")
    last_seq = len(names) + len(names) + 1      # five joins, five messages, one server line
    for screen in [server, *clients]:
        wait_for_seq(screen, last_seq)
    first_screen = room_lines(clients[0])
    assert len(first_screen) == last_seq
    for screen in [server, *clients[1:]]:
        assert room_lines(screen) == first_screen
    assert any(line.endswith(" server: welcome, all") for line in first_screen)
    summaries = set()
    for screen in [server, *clients]:
        screen.send_line("/hash")
        summaries.add(screen.wait_for_stderr(r"^transcript [0-9a-f]{12} \d+$").group(0))
    [summary] = summaries                       # one fingerprint on every screen
    assert summary.endswith(f" {last_seq}")
    assert "transcript " + quit_and_hash(clients[0]) == summary   # and the exit line agrees


def lines_holding(process: RoleProcess, text: str) -> list[str]:
    """Every line of the screen, room, notes and all, that holds ``text``."""
    return [line for line in process.stdout_lines + process.stderr_lines if text in line]


@pytest.mark.points(3)
def test_own_message_appears_only_when_numbered_by_the_server(room):
    room.start_server()
    alice = room.join("alice")
    alice.send_line("my own words")
    wait_for_seq(alice, 2)
    assert room_lines(alice) == ["#1 * alice joined", "#2 alice: my own words"]
    # A local echo would be printed before the numbered line came back: by
    # now it would be on the screen too, as a line of its own.
    assert lines_holding(alice, "my own words") == ["#2 alice: my own words"], alice.output()


@pytest.mark.points(3)
def test_dm_reaches_only_its_recipient(room):
    room.start_server()
    alice, bob, carol = room.join("alice"), room.join("bob"), room.join("carol")
    alice.send_line("/msg bob meet me at noon")
    bob.wait_for_stdout(r"^@alice -> bob: meet me at noon$")
    alice.wait_for_stdout(r"^@alice -> bob: meet me at noon$")
    carol.send_line("marker")                   # once carol sees her own marker ...
    wait_for_seq(carol, 4)
    assert not any("noon" in line for line in carol.stdout_lines)   # ... the DM would have come before


@pytest.mark.points(4)
def test_ignore_survives_a_server_restart(room):
    server = room.start_server()
    bob = room.join("bob")
    room.join("alice")
    bob.send_line("/ignore alice")
    bob.wait_for_stderr(r"you ignore: alice")
    server.send_line("/quit")
    assert server.wait_exit() == 0
    assert bob.wait_exit() == 0                 # told, not failed:
    assert "the server said goodbye: the server is shutting down" in bob.output()

    room.start_server()                         # same database file
    bob = room.join("bob", register=False)
    bob.wait_for_stderr(r"you ignore: alice")
    alice = room.join("alice", register=False)
    alice.send_line("/msg bob are you there?")
    alice.wait_for_stderr(r"your message to bob was not delivered")
    alice.send_line("room hello")
    bob.wait_for_stdout(r"^~#\d+ \(hidden")
    assert not any("are you there" in line or "room hello" in line for line in bob.stdout_lines)


@pytest.mark.points(1)
def test_an_ignored_member_s_lines_in_a_row_are_one_growing_line_on_the_ignoring_screen(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    bob.send_line("/ignore alice")
    bob.wait_for_stderr(r"you ignore: alice")
    spam = 12                                   # within the rate limit: every line is logged
    for number in range(spam):
        alice.send_line(f"spam {number}")
    last = int(alice.wait_for_stdout(rf"^#(\d+) alice: spam {spam - 1}$").group(1))
    first, done = last - spam + 1, last + 1
    server.send_line("after the spam")
    bob.wait_for_stdout(rf"^#{done} server: after the spam$")
    hidden = [line for line in bob.stdout_lines if line.startswith("~")]
    # One run: its first line at once, then (at most once a second while it grew) the whole run.
    assert hidden[0] == f"~#{first} (hidden: a message from someone you ignore)", bob.output()
    assert hidden[-1] == f"~#{first}-#{done - 1} ({spam} hidden messages from people you ignore)", bob.output()
    assert all(re.match(rf"~#{first}(-#\d+)? ", line) for line in hidden), bob.output()
    assert bob.stdout_lines.index(hidden[-1]) == bob.stdout_lines.index(f"#{done} server: after the spam") - 1
    assert not any("alice: spam" in line for line in bob.stdout_lines)
    assert hash_at(bob, done) == hash_at(alice, done)   # the screen collapses; the transcript is whole


@pytest.mark.points(3)
def test_late_joiner_gets_the_same_transcript(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    for i in range(5):
        alice.send_line(f"early {i}")
    wait_for_seq(bob, 7)
    carol = room.join("carol")
    bob.send_line("after carol")
    for screen in (server, alice, bob, carol):
        wait_for_seq(screen, 9)
    assert room_lines(carol) == room_lines(alice) == room_lines(bob) == room_lines(server)


@pytest.mark.points(5)
def test_transcripts_match_through_a_lossy_network(room):
    """20% loss, 5% duplicates, 20% reordered, and delay between the broadcast and the clients."""
    room.client_broadcast_port = free_udp_port()
    room.add_setting("MAX_MESSAGES_PER_SECOND=1000")   # the clients type faster than people do
    plan = FaultPlan(drop=0.2, duplicate=0.05, reorder=0.2, delay_ms=20, seed=2026)
    relay = LossyRelay(plan, room.server_broadcast_port, BROADCAST, room.client_broadcast_port)
    relay_thread = threading.Thread(target=relay.run, daemon=True)
    relay_thread.start()
    try:
        server = room.start_server()
        names = ("alice", "bob", "carol")
        clients = [room.join(name) for name in names]
        rounds = 40
        for round_number in range(rounds):   # round by round: at least a datagram each
            for client, name in zip(clients, names):
                # One at a time, so a round takes several datagrams: a later one
                # may arrive while an earlier one is lost or late.
                client.send_line(f"round {round_number}")
                server.wait_for_stdout(rf"^#\d+ {name}: round {round_number}$")
            for screen in clients:
                wait_for_seq(screen, 3 + 3 * (round_number + 1))
        last_seq = 3 + 3 * rounds
        assert room_lines(clients[0]) == room_lines(clients[1]) == room_lines(clients[2]) == room_lines(server)
        assert len(room_lines(server)) == last_seq
        assert plan.counts["received"] >= rounds and plan.counts["dropped"] > 0
        assert plan.counts["duplicated"] + plan.counts["reordered"] > 0
    finally:
        relay.stop()
        relay_thread.join()


@pytest.mark.network
@pytest.mark.points(1)
def test_the_lossy_relay_hears_and_forwards_a_multicast_room():
    listen_port, forward_port = free_udp_port(), free_udp_port()
    plan = FaultPlan(drop=0, duplicate=0, reorder=0, delay_ms=0, seed=1)
    with net.multicast_receiver(GROUP, forward_port, "127.0.0.1") as member:
        relay = LossyRelay(plan, listen_port, BROADCAST, forward_port, group=GROUP)
        assert relay.channel.choice.startswith(f"the room is multicast to {GROUP}:{forward_port}")
        relay_thread = threading.Thread(target=relay.run, daemon=True)
        relay_thread.start()
        try:
            with net.multicast_sender("127.0.0.1") as server:   # as a multicast room's server sends
                server.sendto(b"a room datagram", (GROUP, listen_port))
            member.settimeout(DEADLINE_SECONDS)
            heard = member.recv(net.MAX_DATAGRAM_RECV_BYTES)
            while heard.startswith(net.PROBE_PREFIX):   # the relay tried its way to the members at start
                heard = member.recv(net.MAX_DATAGRAM_RECV_BYTES)
            assert heard == b"a room datagram"
            assert plan.counts["received"] == 1
        finally:
            relay.stop()
            relay_thread.join()


@pytest.mark.points(1)
def test_on_linux_loopback_the_server_broadcasts_the_room_and_says_why(room):
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only: macOS's loopback cannot broadcast, and Windows' may not")
    server = room.start_server()
    server.wait_for_stderr(rf"^the room is broadcast to 127\.255\.255\.255:{room.server_broadcast_port}; "
                           r"a probe datagram reached 2 sockets bound to its port here$")
    server.send_line("/quit")
    assert server.wait_exit() == 0


@pytest.mark.points(2)
def test_a_multicast_room_names_its_group_at_login_and_members_hear_it_by_datagram(room):
    server = room.start_server("--multicast", GROUP)
    server.wait_for_stderr(rf"^the room is multicast to {GROUP}:{room.server_broadcast_port} \(MULTICAST_GROUP\); "
                           r"a probe datagram reached 2 sockets bound to its port here$")
    clients = [room.join("alice"), room.join("bob")]   # not told the group: the server names it at login
    for index, client in enumerate(clients * 3):
        client.send_line(f"line {index}")
        server.wait_for_stdout(rf"^#\d+ \w+: line {index}$")
    assert len({hash_at(screen, 8) for screen in (server, *clients)}) == 1
    for client in clients:
        client.send_line("/quit")
        assert client.wait_exit() == 0, client.output()
        assert_heard_the_room_by_datagram(client)


@pytest.mark.points(2)
def test_flooding_client_alone_is_told_to_slow_down(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    for i in range(60):
        alice.send_line(f"flood {i}")
    alice.wait_for_stderr(r"slow down")
    bob.send_line("still here")
    bob.wait_for_stdout(r" bob: still here$")
    assert not any("slow down" in line for line in bob.stderr_lines)
    server.send_line("/who")
    server.wait_for_stderr(r"in the room: server, alice, bob")


def raw_registration(room: Room, name: str):
    """Connect from inside the test and send Register, without waiting."""
    return register_raw(room.port, room.env_file, name, PASSWORD)


def raw_member(room: Room, name: str):
    """Log in from inside the test, to misbehave afterwards: returns the socket,
    the session and the RoomKey the server handed over."""
    sock, session, received = raw_registration(room, name)
    return sock, session, receive_until(sock, session, received, RoomKey)


@pytest.mark.points(3)
def test_a_slow_password_check_does_not_stall_the_room(room):
    room.add_setting("ARGON2_MEMORY_KIB=262144")   # about half a second a hash: slow on purpose
    room.add_setting("ARGON2_ITERATIONS=2")
    server = room.start_server()
    alice = room.join("alice")
    sock, _, _ = raw_registration(room, "bob")       # bob's password is being hashed now ...
    alice.send_line("ping")                          # ... and the room must not wait for it
    ping = int(server.wait_for_stdout(r"^#(\d+) alice: ping$").group(1))
    bob_joined = int(server.wait_for_stdout(r"^#(\d+) \* bob joined$").group(1))
    assert ping < bob_joined, server.output()
    sock.close()


@pytest.mark.points(4)
def test_forged_replayed_and_garbage_datagrams_change_nothing(room):
    server = room.start_server()
    alice = room.join("alice")
    # The test listens on the broadcast port too, to capture a genuine datagram.
    eavesdropper = net.broadcast_receiver(room.client_broadcast_port)
    eavesdropper.setblocking(True)
    eavesdropper.settimeout(DEADLINE_SECONDS)
    sock, session, room_key = raw_member(room, "mallory")
    wait_for_seq(alice, 2)
    alice.send_line("genuine")
    wait_for_seq(alice, 3)
    captured = [eavesdropper.recv(2048) for _ in range(3)]   # mallory's join, "genuine", a heartbeat

    # Mallory knows the room key but not the server's signing key.
    forger = DatagramSealer(Ed25519PrivateKey.generate())
    forger.set_room_key(room_key.epoch, room_key.key)
    forged_event = RoomEvent(4, "say", "server", "forged: everyone is banned")
    sender = net.broadcast_sender()
    target = (BROADCAST, room.client_broadcast_port)
    sender.sendto(forger.seal(encode(RoomBatch((forged_event,), 4))), target)
    for datagram in captured:                   # replays of genuine datagrams
        sender.sendto(datagram, target)
    sender.sendto(b"\x00" * 50, target)         # garbage of every size
    sender.sendto(os.urandom(1200), target)
    sender.sendto(b"", target)
    sender.close()
    eavesdropper.close()

    alice.send_line("still fine")               # the room goes on, numbering unchanged
    alice.wait_for_stdout(r"^#4 alice: still fine$")
    server.wait_for_stdout(r"^#4 alice: still fine$")
    assert not any("forged" in line for line in alice.stdout_lines)
    assert len([line for line in room_lines(alice) if line.endswith("genuine")]) == 1
    sock.close()


@pytest.mark.points(3)
def test_garbage_and_a_client_vanishing_mid_record_do_not_stop_the_server(room):
    server = room.start_server()
    alice = room.join("alice")
    with socket.create_connection(("127.0.0.1", room.port), timeout=DEADLINE_SECONDS) as garbage:
        garbage.sendall(os.urandom(3000))       # not a handshake at all
    sock, session, _ = raw_member(room, "mallory")
    session.send(Say("cut short"))
    sock.sendall(bytes(session.outgoing)[:-5])  # all but the last bytes of a record ...
    sock.close()                                # ... then gone
    server.wait_for_stderr(r"mallory .*closed the connection in the middle of a record")
    with socket.create_connection(("127.0.0.1", room.port), timeout=DEADLINE_SECONDS) as oversize:
        oversize.sendall(b"\xff\xff" + b"x" * 100)   # a length over the limit
    alice.send_line("after all that")
    for screen in (alice, server):
        screen.wait_for_stdout(r"^#\d+ alice: after all that$")
    assert not any("cut short" in line for line in alice.stdout_lines)


@pytest.mark.points(2)
def test_the_instructor_demo_ends_with_every_screen_the_same():
    result = subprocess.run([sys.executable, "-m", "lab2_udp.demo", "--headless"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "DISPLAY": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Every screen shows the same room transcript." in result.stdout
    hashes = result.stdout.strip().splitlines()[-4].split(" | ")
    assert len(hashes) == 5 and len(set(h.strip() for h in hashes)) == 1


@pytest.mark.points(1)
def test_the_demo_counts_a_run_of_hidden_messages_as_every_number_it_covers():
    from lab2_udp.demo import seq_of, shown_numbers
    everyone = ["#1 * bob joined", "#2 bob: a", "#3 bob: b", "#4 bob: c", "#5 alice: hi", "@alice -> carol: psst"]
    carol = ["#1 * bob joined", "~#2 (hidden: a message from someone you ignore)",
             "~#2-#4 (3 hidden messages from people you ignore)", "#5 alice: hi", "@alice -> carol: psst"]
    assert shown_numbers(carol) == shown_numbers(everyone) == (1, 2, 3, 4, 5)
    assert seq_of(carol[2]) == 2


@pytest.mark.points(2)
def test_breaking_a_limit_gets_a_clear_error_to_that_client_only(room):
    room.add_setting("MAX_CLIENTS=2")
    room.start_server()
    alice = room.join("alice")
    bad_name = room.start_client("no way!")
    assert bad_name.wait_exit() == 1
    assert "names are 3-20 characters" in bad_name.output()
    room.join("bob")
    carol = room.start_client("carol")
    assert carol.wait_exit() == 1
    assert "the room is full" in carol.output()
    alice.send_line("x" * 1001)                  # more than one datagram can carry
    alice.wait_for_stderr(r"not sent: .*1000 bytes")
    alice.send_line("/msg bob")                  # a DM with no text
    alice.wait_for_stderr(r"not sent: an empty message")
    alice.send_line("still in")
    alice.wait_for_stdout(r"^#3 alice: still in$")


@pytest.mark.points(2)
def test_server_rename_is_seen_by_the_room(room):
    server = room.start_server()
    alice = room.join("alice")
    server.send_line("/nick host")
    alice.wait_for_stdout(r"^#2 \* server is now host$")
    server.send_line("hello as host")
    alice.wait_for_stdout(r"^#3 host: hello as host$")
    alice.send_line("/who")
    alice.wait_for_stderr(r"in the room: host, alice")


@pytest.mark.points(2)
def test_lines_piped_in_before_the_login_are_sent_not_lost(room):
    server = room.start_server()
    alice = room.start_client("alice")
    alice.send_line("typed before the login finished")
    alice.close_stdin()                          # and the end of stdin, at once
    assert alice.wait_exit() == 0, alice.output()
    server.wait_for_stdout(r"^#2 alice: typed before the login finished$")


@pytest.mark.points(2)
def test_late_joiner_of_a_long_room_gets_all_of_it_in_pieces(room):
    server = room.start_server()
    for i in range(700):                        # more than one history answer holds
        server.send_line(f"line {i}")
    wait_for_seq(server, 700)
    carol = room.join("carol")
    wait_for_seq(carol, 701)
    assert room_lines(carol) == room_lines(server)


@pytest.mark.points(3)
def test_a_late_joiner_past_the_servers_window_is_told_what_is_not_kept_and_has_the_same_hash(room):
    room.add_setting("ROOM_HISTORY_EVENTS=20")
    server = room.start_server()
    alice = room.join("alice")
    alice.send_line("/nick ally")               # #2: a rename the window will no longer hold
    wait_for_seq(server, 2)
    for i in range(30):
        server.send_line(f"line {i}")
    wait_for_seq(server, 32)                    # the server keeps #13 to #32
    carol = room.join("carol")                  # #33
    carol.send_line("/ignore ally")             # the account behind a name from before carol's window
    carol.wait_for_stderr(r"you ignore: alice")
    alice.send_line("hello carol")              # #34
    wait_for_seq(carol, 34)
    assert room_lines(carol)[0] == "#12 * 12 earlier messages not kept"
    assert room_lines(carol)[1:] == room_lines(server)[12:33]
    carol.wait_for_stdout(r"^~#34 \(hidden")          # alice's line, hidden: carol ignores her account
    # The server saw every event from #1, carol only #13 on, alice maybe in between (a repair
    # that came after the window moved): one hash.
    assert hash_at(carol, 34) == hash_at(alice, 34) == hash_at(server, 34)


@pytest.mark.points(3)
def test_a_member_that_hears_no_broadcast_follows_the_room_over_tcp_and_says_why(room):
    server = room.start_server()
    alice = room.join("alice")
    room.client_broadcast_port = free_udp_port()   # bob listens where nothing is ever sent
    bob = room.join("bob")
    alice.send_line("can you hear me?")
    server.wait_for_stdout(r"^#3 alice: can you hear me\?$")
    server.send_line("and me?")
    for screen in (alice, bob):
        screen.wait_for_stdout(r"^#3 alice: can you hear me\?$")
        screen.wait_for_stdout(r"^#4 server: and me\?$")
    bob.wait_for_stderr(r"no room datagram has arrived for 1.5 s: broadcast may be blocked")
    assert sum("no room datagram" in line for line in bob.stderr_lines) == 1
    assert not any("no room datagram" in line for line in alice.stderr_lines)
    assert hash_at(bob, 4) == hash_at(alice, 4)


@pytest.mark.points(1)
def test_a_client_that_fails_ends_with_its_reason_not_a_transcript(room):
    room.start_server()
    room.join("alice")
    second = room.start_client("alice", register=False)
    assert second.wait_exit() == 1
    assert second.stderr_lines[-1] == "alice is already in the room", second.output()
    wrong = room.start_client("bob", register=False, password="not the password")
    assert wrong.wait_exit() == 1
    assert wrong.stderr_lines[-1].startswith("login failed"), wrong.output()


@pytest.mark.points(1)
def test_the_server_warns_when_the_broadcast_address_is_no_broadcast_address(room):
    # 127.0.0.1 is one socket's address, not a broadcast: of two sockets sharing the port, one hears a probe.
    room.start_server("--broadcast-addr", "127.0.0.1").wait_for_stderr(
        r"^warning: the room is broadcast to 127\.0\.0\.1:\d+, but a probe datagram did not reach 2 sockets "
        r"bound to its port here \(a firewall may drop it, or it is not this network's broadcast address\)")
    good = room.start_server()
    good.send_line("/quit")
    assert good.wait_exit() == 0
    # (Only this warning: a server on cryptography before 50 has one of its own, tests/test_dependencies.py.)
    assert not any(line.startswith("warning: BROADCAST_ADDR") for line in good.stderr_lines), good.output()


@pytest.mark.points(3)
def test_a_member_renames_and_every_screen_follows_the_account(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    bob.send_line("/ignore alice")
    bob.wait_for_stderr(r"^you ignore: alice$")
    alice.send_line("before")
    alice.send_line("/nick ally")
    alice.send_line("after")
    for screen in (server, alice, bob):
        screen.wait_for_stdout(r"^#4 \* alice is now ally$")
    for screen in (server, alice):
        screen.wait_for_stdout(r"^#3 alice: before$")
        screen.wait_for_stdout(r"^#5 ally: after$")
    bob.wait_for_stdout(r"^~#5 \(hidden")             # a new name does not escape an ignore
    alice.send_line("/nick bob")
    alice.wait_for_stderr(r"^! bob is taken$")
    alice.send_line("/msg bob still me")
    alice.wait_for_stderr(r"^! your message to bob was not delivered$")
    alice.send_line("/who")
    alice.wait_for_stderr(r"^in the room: server, ally, bob$")
    assert hash_at(alice, 5) == hash_at(bob, 5)


@pytest.mark.points(1)
def test_an_account_made_in_lab1_registers_in_lab2_as_the_handout_says(room):
    # Lab 1 and Lab 2 share DB_PATH: the account exists, and lab2.md's first command
    # (--register, the same password) logs in rather than failing "that name is taken".
    store = AccountStore(room.tmp_path / "chat.db", Argon2Cost(memory_kib=8, iterations=1))
    store.register("alice", PASSWORD)
    store.close()
    server = room.start_server()
    room.join("alice", register=True)
    server.wait_for_stderr(r"^\[server: 1 member, encrypted")   # one member, not "1 members"
    mallory = room.start_client("alice", register=True, password="another password")
    assert mallory.wait_exit() == 1 and mallory.stderr_lines[-1] == "that name is taken"


@pytest.mark.points(1)
@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_a_server_on_the_ipv6_loopback_serves_the_room(room):
    server = room.processes.start(
        SERVER, "--host", "::1", "--port", "0", "--env", str(room.env_file), "--headless",
        "--db", str(room.tmp_path / "chat.db"), "--broadcast-addr", BROADCAST,
        "--broadcast-port", str(room.server_broadcast_port))
    port = server.wait_for_stderr(r"^listening on \[::1\]:(\d+), broadcasting").group(1)
    alice = room.processes.start(
        CLIENT, "--host", "::1", "--port", port, "--name", "alice", "--register", "--headless",
        "--env", str(room.env_file), "--broadcast-port", str(room.client_broadcast_port),
        env={"CHAT_PASSWORD": PASSWORD})
    alice.send_line("over IPv6")
    server.wait_for_stdout(r"^#2 alice: over IPv6$")
    alice.wait_for_stdout(r"^#2 alice: over IPv6$")
    quit_and_hash(alice)   # the room came by broadcast from 127.0.0.1, the same host as ::1
    assert int(alice.wait_for_stderr(r"^datagrams: (\d+) opened").group(1)) > 0, alice.output()


@pytest.mark.points(2)
def test_a_mistyped_command_is_refused_not_said_to_the_room(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    alice.send_line("/mgs bob my secret")              # meant /msg: a DM
    alice.wait_for_stderr(r"^not sent: /mgs is no command")
    alice.send_line("//slash at the start")
    for screen in (server, bob):
        screen.wait_for_stdout(r"^#3 alice: /slash at the start$")
    assert not any("secret" in line for line in bob.stdout_lines + server.stdout_lines)
