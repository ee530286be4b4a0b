"""The wire view (common/wire.py): one line per record and datagram.

Unit tests feed real sessions, sealers and the client's datagram path, with
the view on, and read the lines it writes; black-box tests run the roles with
``--wire`` over loopback; a window test toggles the view with F2 under Xvfb.
"""
from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import net, noise, ui, wire
from common.errors import ProtocolError
from common.framing import DatagramOpener, DatagramSealer
from common.messages import (
    ChatMessage, History, Login, Register, RepairRequest, RoomBatch, RoomEvent, RoomKey, decode, encode,
)
from common.session import SecureSession
from common.transcript import DatagramGate, Transcript, read_room_datagram
from tests.procs import DEADLINE_SECONDS
from tests.test_lab1 import PASSWORD as LAB1_PASSWORD
from tests.test_lab1 import lab  # noqa: F401  (a fixture)
from tests.test_lab2 import PASSWORD as LAB2_PASSWORD
from tests.test_lab2 import free_udp_port, hash_at, raw_member, room  # noqa: F401  (a fixture)
from tests.test_ui import drive, in_process_display, window_display  # noqa: F401  (fixtures)

SERVER_PRIVATE, SERVER_PUBLIC = noise.generate_keypair()
PSK = os.urandom(32)
SERVER_SOURCE = ("127.0.0.1", 41852)
TAG_BYTES = 16


@pytest.fixture
def wire_lines():
    """The view on, its lines collected here; off again after the test."""
    lines: list[str] = []
    wire.turn_on(lines.append)
    yield lines
    wire.turn_off()


def shuttle(sender: SecureSession, receiver: SecureSession) -> list:
    data = bytes(sender.outgoing)
    sender.outgoing.clear()
    return receiver.receive(data)


def login_record_bytes(name: str, password: str) -> int:
    """docs/protocol.md: 2 length bytes, a type byte, each string as a u16 length
    and its UTF-8, and the 16-byte tag."""
    return 2 + 1 + (2 + len(name.encode())) + (2 + len(password.encode())) + TAG_BYTES


# --- Records ------------------------------------------------------------------------------

@pytest.mark.points(2)
def test_a_login_shows_every_record_with_its_real_length_and_bytes(wire_lines):
    client = SecureSession.client(PSK, SERVER_PUBLIC)
    server = SecureSession.server(PSK, SERVER_PRIVATE, peer="127.0.0.1:40122")
    first = bytes(client.outgoing)
    shuttle(client, server)
    second = bytes(server.outgoing)
    shuttle(server, client)
    client.send(Login("alice", "correct horse!"))
    login = bytes(client.outgoing)
    shuttle(client, server)
    assert wire_lines == [
        f"-> server  record 50 B  len=48 e={first[2:7].hex()}..  handshake 1/2: psk, e, es",
        f"<- 127.0.0.1:40122  record 50 B  len=48 e={first[2:7].hex()}..  handshake 1/2: psk, e, es",
        f"-> 127.0.0.1:40122  record 50 B  len=48 e={second[2:7].hex()}..  handshake 2/2: e, ee",
        f"<- server  record 50 B  len=48 e={second[2:7].hex()}..  handshake 2/2: e, ee",
        f"-> server  record {len(login)} B  len={len(login) - 2} ct={login[2:7].hex()}..  "
        "Login(name='alice', password=***)",
        f"<- 127.0.0.1:40122  record {len(login)} B  len={len(login) - 2} ct={login[2:7].hex()}..  "
        "Login(name='alice', password=***)",
    ]
    assert len(first) == len(second) == 2 + 48
    assert len(login) == login_record_bytes("alice", "correct horse!")


@pytest.mark.points(1)
def test_passwords_and_the_room_key_never_reach_a_wire_line(wire_lines):
    client = SecureSession.client(PSK, SERVER_PUBLIC)
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    shuttle(client, server)
    shuttle(server, client)
    room_key, signing_key = os.urandom(32), os.urandom(32)
    client.send(Register("alice", "hunter2 is my secret"))
    client.send(Login("alice", "hunter2 is my secret"))
    server.send(RoomKey(3, room_key, signing_key))
    shuttle(client, server)
    shuttle(server, client)
    text = "\n".join(wire_lines)
    assert "hunter2" not in text and room_key.hex()[:10] not in text
    assert text.count("password=***") == 4          # sent and received, Register and Login
    assert f"RoomKey(epoch=3, key=***, signing_key={signing_key[:5].hex()}..)" in text


@pytest.mark.points(1)
def test_long_text_is_cut_and_control_characters_are_escaped():
    line = wire.format_record(wire.SENT_RECORD, "server", b"\x00\x05abcde",
                              ChatMessage("alice", "\x1b[2J" + "x" * 100))
    assert r"text='\x1b[2J" in line and "\x1b" not in line
    assert line.endswith("xxx'...)") and "x" * 40 not in line


@pytest.mark.points(1)
def test_sequence_numbers_are_shown_as_runs():
    assert wire.seq_ranges([42, 38, 39, 40, 38]) == "38-40,42"
    assert wire.seq_ranges([7]) == "7"
    assert wire.describe(RoomBatch((), 9)) == "RoomBatch(heartbeat, latest 9)"


@pytest.mark.points(1)
def test_the_view_costs_nothing_and_says_nothing_when_off():
    assert wire.tap is None
    client = SecureSession.client(PSK, SERVER_PUBLIC)
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    shuttle(client, server)
    lines: list[str] = []
    wire.turn_on(lines.append)
    wire.turn_off()
    shuttle(server, client)
    client.send(Login("alice", "pw"))
    shuttle(client, server)
    assert lines == [] and wire.tap is None


# --- Datagrams: the client's path, sans-IO ---------------------------------------------------

class Listener:
    """The client's datagram path as lab2_udp/client.py runs it: gate, opener, transcript."""

    def __init__(self, signing_key: Ed25519PrivateKey, room_key: bytes) -> None:
        self.opener = DatagramOpener(signing_key.public_key().public_bytes_raw())
        self.opener.add_room_key(1, room_key)
        self.gate = DatagramGate()
        self.gate.server_host = SERVER_SOURCE[0]
        self.transcript = Transcript()

    def hear(self, datagram: bytes, source: tuple = SERVER_SOURCE, now: float = 0.0) -> list[RoomEvent]:
        if not self.gate.worth_opening(source, now):
            return []
        try:
            batch = read_room_datagram(self.opener, datagram)
        except ProtocolError:
            self.gate.rejected(source, now)
            return []
        self.gate.opened(source)
        return self.transcript.receive(batch.events, batch.latest_seq)

    def history(self, message: History) -> list[RoomEvent]:
        return self.transcript.receive(message.events, message.latest_seq)


LOG = [RoomEvent(seq, "say", "alice", f"message {seq}") for seq in range(1, 11)]


@pytest.fixture
def room_pair():
    """A sealer (the server) and a Listener (a member) sharing a room key."""
    signing_key, room_key = Ed25519PrivateKey.generate(), os.urandom(32)
    sealer = DatagramSealer(signing_key)
    sealer.set_room_key(1, room_key)
    return sealer, Listener(signing_key, room_key), room_key


def batch(first: int, last: int) -> bytes:
    return encode(RoomBatch(tuple(LOG[first - 1:last]), last))


@pytest.mark.points(2)
def test_a_datagram_line_shows_its_header_and_ciphertext_as_sealed(room_pair, wire_lines):
    sealer, listener, _ = room_pair
    datagram = sealer.seal(batch(1, 3))
    listener.hear(datagram)
    size, ciphertext = len(datagram), datagram[13:18].hex()
    assert wire_lines == [
        f"~> room  datagram {size} B  v1 epoch=1 pkt=0 ct={ciphertext}..  RoomBatch(events 1-3, latest 3)",
        f"<~ 127.0.0.1:41852  datagram {size} B  v1 epoch=1 pkt=0 ct={ciphertext}..  "
        "RoomBatch(events 1-3, latest 3)",
    ]
    assert wire.packet_number(sealer.seal(batch(4, 4))) == 1   # the view reads the header as framing.py writes it


@pytest.mark.points(2)
def test_gaps_repairs_and_duplicate_events_are_marked(room_pair, wire_lines):
    sealer, listener, _ = room_pair
    listener.hear(sealer.seal(batch(1, 2)))
    sealer.seal(batch(3, 4))                                  # lost on the way
    listener.hear(sealer.seal(batch(5, 5)))
    assert wire_lines[-1].endswith("RoomBatch(events 5, latest 5)  [gap 3-4]")
    wire_lines.clear()
    repair = RepairRequest(2)
    wire.tap.record(wire.SENT_RECORD, "server", b"\x00\x19" + bytes(25), repair)   # as the session shows it
    answer = History(tuple(LOG[2:5]), 5)
    wire.tap.record(wire.RECEIVED_RECORD, "server", b"\x00\x40" + bytes(64), answer)
    assert len(wire_lines) == 1                               # the answer waits for the transcript's marks
    assert listener.history(answer) == LOG[2:5]
    assert wire_lines[-1].endswith("History(events 3-5, latest 5)  [repair over TCP: 3-4]  [duplicate 5]")
    late = sealer.seal(batch(3, 4))                            # the lost datagram turns up after all
    listener.hear(late)
    assert wire_lines[-1].endswith("RoomBatch(events 3-4, latest 4)  [duplicate 3-4]")


@pytest.mark.points(2)
def test_replays_forgeries_and_floods_are_marked_as_dropped(room_pair, wire_lines):
    sealer, listener, room_key = room_pair
    genuine = sealer.seal(batch(1, 1))
    listener.hear(genuine)
    listener.hear(genuine)
    assert wire_lines[-1].endswith("[duplicate: packet 0 is a replay or too old]")
    forger = DatagramSealer(Ed25519PrivateKey.generate())     # a member knows the room key, not the signing key
    forger.set_room_key(1, room_key)
    wire.turn_off()                                           # the forger's own seal is not the member's to see
    forger.seal(b"")                                          # packet 0 is taken: a fresh number, then
    forged = forger.seal(encode(RoomBatch((RoomEvent(2, "say", "server", "you are banned"),), 2)))
    wire.turn_on(wire_lines.append)
    listener.hear(forged, ("127.0.0.1", 6666))
    assert wire_lines[-1] == (f"<~ 127.0.0.1:6666  datagram {len(forged)} B  v1 epoch=1 pkt=1 "
                              f"ct={forged[13:18].hex()}..  [rejected: integrity check failed: bad signature, "
                              "not the server's]")
    garbage = bytes([1]) + (1).to_bytes(4, "big") + (5).to_bytes(8, "big") + os.urandom(100)   # a header, then noise
    listener.hear(garbage, ("127.0.0.1", 6666))
    assert wire_lines[-1].endswith("[rejected: integrity check failed: bad tag, not sealed with the room key]")
    listener.hear(genuine, ("10.9.8.7", 5061))
    assert wire_lines[-1] == "<~ 10.9.8.7:5061  datagram  [ignored unopened: not from the server's host]"
    for _ in range(20):                                       # one source, many failures within a second
        listener.hear(b"\x00" * 50, ("127.0.0.1", 7777), now=1.0)
    assert wire_lines[-1].endswith("[ignored unopened: other sources failed too often this second]")
    assert not any("you are banned" in line for line in wire_lines)


@pytest.mark.points(1)
def test_held_lines_keep_their_order_and_a_flush_writes_them(wire_lines):
    answer = History(tuple(LOG[:2]), 2)
    wire.tap.record(wire.RECEIVED_RECORD, "server", b"\x00\x30" + bytes(48), answer)
    wire.tap.record(wire.RECEIVED_RECORD, "server", b"\x00\x20" + bytes(32), ChatMessage("a", "b"))
    assert wire_lines == []                                   # the History waits, and what came after it
    wire.flush()                                              # a front end's turn ends: all of it goes out
    assert [line.split("  ")[-1] for line in wire_lines] == [
        "History(events 1-2, latest 2)", "ChatMessage(sender='a', text='b')"]


# --- The roles, with --wire ---------------------------------------------------------------------

def wire_lines_of(process) -> list[str]:
    return [line[len(ui.WIRE_PREFIX):] for line in process.stdout_lines if line.startswith(ui.WIRE_PREFIX)]


@pytest.mark.network
@pytest.mark.points(3)
def test_lab1_with_wire_shows_the_handshake_and_the_login_with_their_lengths(lab):  # noqa: F811
    server = lab.start_server("--wire")
    alice = lab.logged_in_client("alice", "--register", "--wire")
    register = login_record_bytes("alice", LAB1_PASSWORD)
    for process, out, back in ((alice, "->", "<-"), (server, "<-", "->")):
        process.wait_for_stdout(rf"^wire: {back} .*LoginAccepted\(name='alice', server_name='server'\)$")
        lines = wire_lines_of(process)
        assert re.fullmatch(rf"{out} \S+  record 50 B  len=48 e=[0-9a-f]{{10}}\.\.  handshake 1/2: psk, e, es",
                            lines[0]), lines
        assert re.fullmatch(rf"{back} \S+  record 50 B  len=48 e=[0-9a-f]{{10}}\.\.  handshake 2/2: e, ee",
                            lines[1]), lines
        assert re.fullmatch(rf"{out} \S+  record {register} B  len={register - 2} ct=[0-9a-f]{{10}}\.\.  "
                            r"Register\(name='alice', password=\*\*\*\)", lines[2]), lines
        assert LAB1_PASSWORD not in process.output()
    assert re.match(r"<- 127\.0\.0\.1:\d+  ", wire_lines_of(server)[0])   # the server names the client
    alice.send_line("hi")
    server.wait_for_stdout(r"^alice: hi$")
    server.wait_for_stdout(r"^wire: <- .*  record 30 B  len=28 .*ChatMessage\(sender='alice', text='hi'\)$")
    # Chat lines are as they were: a test that reads them skips the wire lines by their prefix.
    assert [line for line in server.stdout_lines if not line.startswith(ui.WIRE_PREFIX)] == ["alice: hi"]


class DroppingRelay:
    """Between the server's broadcast port and the client's: passes each
    datagram on, but drops the one holding an event with the text ``lost``.
    It reads them with a member's room key, as any member could."""

    def __init__(self, listen_port: int, forward_port: int, room_key: RoomKey, lost: str) -> None:
        self.inbound = net.broadcast_receiver(listen_port)
        self.outbound = net.broadcast_sender()
        self.forward_to = ("127.0.0.1", forward_port)
        self.opener = DatagramOpener(room_key.signing_key)
        self.opener.add_room_key(room_key.epoch, room_key.key)
        self.lost = lost
        self.passed: list[tuple[RoomBatch, bytes]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.inbound, selectors.EVENT_READ)
            while not self.stopping.is_set():
                if selector.select(0.05):   # a bound on the wait, so stop() is noticed
                    datagram = self.inbound.recv(net.MAX_DATAGRAM_RECV_BYTES)
                    batch = decode(self.opener.open(datagram))
                    if any(event.text == self.lost for event in batch.events):
                        continue
                    self.passed.append((batch, datagram))
                    self.outbound.sendto(datagram, self.forward_to)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(DEADLINE_SECONDS)
        self.inbound.close()
        self.outbound.close()


def start_client_with_wire(room, name: str):  # noqa: F811
    """A Lab 2 client with --wire, as tests/test_lab2.py starts one otherwise."""
    return room.processes.start(
        "lab2_udp.client", "--host", room.host, "--port", str(room.port), "--name", name,
        "--env", str(room.env_file), "--broadcast-port", str(room.client_broadcast_port),
        "--register", "--headless", "--wire", env={"CHAT_PASSWORD": LAB2_PASSWORD})


@pytest.mark.network
@pytest.mark.points(4)
def test_lab2_client_with_wire_marks_a_gap_its_repair_a_duplicate_and_a_forgery(room):  # noqa: F811
    room.client_broadcast_port = free_udp_port()   # the relay stands between the server and alice
    server = room.start_server("--wire")
    mallory, _session, room_key = raw_member(room, "mallory")   # her key lets the relay read, and forge
    relay = DroppingRelay(room.server_broadcast_port, room.client_broadcast_port, room_key, "this one is lost")
    sender = net.broadcast_sender()
    try:
        alice = start_client_with_wire(room, "alice")
        alice.wait_for_stdout(r"^#\d+ \* alice joined$")   # so the next event has a datagram of its own
        server.send_line("this one is lost")
        lost = int(server.wait_for_stdout(r"^#(\d+) server: this one is lost$").group(1))
        server.send_line("after the loss")
        alice.wait_for_stdout(rf"^#{lost + 1} server: after the loss$")
        alice.wait_for_stdout(rf"^wire: <~ 127\.0\.0\.1:\d+  datagram \d+ B  v1 epoch=\d+ pkt=\d+ .*  \[gap {lost}\]$")
        alice.wait_for_stdout(rf"^wire: <- \S+  record \d+ B  len=\d+ ct=[0-9a-f]{{10}}\.\.  "
                              rf"History\(events {lost}\b.*  \[repair over TCP: {lost}\b")

        after = next(datagram for batch, datagram in relay.passed
                     if any(event.text == "after the loss" for event in batch.events))
        number, header = wire.packet_number(after), f"datagram {len(after)} B  v1 epoch={room_key.epoch}"
        server.wait_for_stdout(rf"^wire: ~> room  {header} pkt={number} ct={after[13:18].hex()}\.\.  "
                               rf"RoomBatch\(events {lost + 1}, latest {lost + 1}\)$")
        sender.sendto(after, ("127.0.0.1", room.client_broadcast_port))   # a replay
        alice.wait_for_stdout(rf"^wire: <~ 127\.0\.0\.1:\d+  {header} pkt={number} ct=[0-9a-f]{{10}}\.\.  "
                              rf"\[duplicate: packet {number} is a replay or too old\]$")

        forger = DatagramSealer(Ed25519PrivateKey.generate())   # the room key, but not the server's signing key
        forger.set_room_key(room_key.epoch, room_key.key)
        forged = forger.seal(encode(RoomBatch((RoomEvent(lost + 2, "say", "server", "forged"),), lost + 2)))
        sender.sendto(forged, ("127.0.0.1", room.client_broadcast_port))
        alice.wait_for_stdout(r"^wire: <~ .*  \[rejected: integrity check failed: bad signature, not the server's\]$")
        # The wire lines are for the eyes: the transcript and its hash are everyone's.
        assert hash_at(alice, lost + 1) == hash_at(server, lost + 1)
    finally:
        sender.close()
        relay.stop()
        mallory.close()
    assert [line for line in alice.stdout_lines if line.startswith("#")][-2:] == [
        f"#{lost} server: this one is lost", f"#{lost + 1} server: after the loss"]
    assert not any("forged" in line for line in alice.stdout_lines if not line.startswith(ui.WIRE_PREFIX))


# --- The window's toggle ------------------------------------------------------------------------

@pytest.mark.gui
@pytest.mark.points(2)
def test_window_shows_the_wire_in_its_own_style_and_f2_or_the_checkbox_toggles_it(window_display, capsys):  # noqa: F811
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    parser = argparse.ArgumentParser()
    ui.add_front_end_options(parser)
    assert parser.parse_args(["--wire"]).wire is True   # --wire: on before any window exists
    window = ui.ChatWindow("wire test", lambda text: None, lambda: None, poll_interval_ms=5)
    try:
        assert window._wire_is_shown()                 # ... and the window takes it over
        window.show_line("alice", "a chat line")
        first = SecureSession.client(PSK, SERVER_PUBLIC)   # its first record goes out at once
        drive(window, window_display, "search", "--sync", "--onlyvisible",
              "--name", "^wire test$", "windowfocus", "--sync", "%1")
        drive(window, window_display, "key", "F2")
        assert not window._wire_is_shown() and wire.tap is None
        SecureSession.client(PSK, SERVER_PUBLIC)        # off: nothing shown
        window._wire_toggle.invoke()                    # the checkbox: on again
        assert window._wire_is_shown() and wire.tap is not None
        third = SecureSession.client(PSK, SERVER_PUBLIC)
        window.show_line("alice", "another chat line")
        window._root.update()   # drawn once Tk is idle, in one insert
        lines = transcript_with_tags(window)
    finally:
        wire.turn_off()
        window._root.destroy()
    shown = [f"-> server  record 50 B  len=48 e={session.outgoing[2:7].hex()}..  handshake 1/2: psk, e, es"
             for session in (first, third)]
    assert [text for text, tags in lines if tags == {"wire"}] == shown
    assert ("alice: a chat line", {"sender0"}) in lines and ("alice: another chat line", {"sender0"}) in lines
    assert lines[-1][0] == "alice: another chat line"
    stdout = capsys.readouterr().out.splitlines()
    assert [line for line in stdout if line.startswith(ui.WIRE_PREFIX)] == [ui.WIRE_PREFIX + line for line in shown]
    assert [line for line in stdout if not line.startswith(ui.WIRE_PREFIX)] == [
        "alice: a chat line", "alice: another chat line"]


def transcript_with_tags(window: ui.ChatWindow) -> list[tuple[str, set[str]]]:
    """Each line of the window's transcript, with the tags of its first
    character but "line", which every character has."""
    text = window._transcript.get("1.0", "end-1c")
    return [(line, set(window._transcript.tag_names(f"{number}.0")) - {"line"})
            for number, line in enumerate(text.split("\n"), start=1) if line]
