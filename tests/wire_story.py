"""The wire story: when a black-box test fails, what happened on the wire.

A pytest plugin (registered in tests/conftest.py). From the moment a test
starts its first program (tests/procs.py calls ``process_environment``), it
captures the loopback interface (tests/wire_capture.py) and gives every
program the test starts, and the test process itself, one key log
(``CHAT_KEYLOG``, common/keylog.py). If the test fails, its report gets a
section ``wire story``: every connection, record and datagram on the test's
ports, in order and numbered, decoded by the kit's own codec::

    #1   client 127.0.0.1:40122 -> server :5001  connect
    #2   client 127.0.0.1:40122 -> server :5001  record 50 B  handshake 1 (initiator's key 3f2a9c01...)
    #3   server 127.0.0.1:5001 -> client :40122  record 50 B  handshake 2
    #4   client 127.0.0.1:40122 -> server :5001  record 47 B  Register(name='ana', password=***)
    expected:
        AssertionError: lab1_tcp.server: timed out waiting for ...

Records are decrypted as the receiver would: the session's keys are found
in the key log by the initiator's ephemeral key (the first 32 bytes of
handshake record 1, sent in clear), and each direction's nonce is its count
of records since the handshake. Datagrams are opened with the room key of
the epoch in their header. What no logged key opens says
``(encrypted, no key)``. Passwords never appear; the story is bounded to its
last MAX_LINES lines. It reads the wire, so it shows what was sent, even by
a student's program that logs nothing.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from common import keylog, net
from common.errors import ProtocolError
from common.framing import (
    DATAGRAM_HEADER, DATAGRAM_OVERHEAD_BYTES, SIGNATURE_BYTES, RecordDecoder, datagram_nonce,
)
from common.messages import RoomEvent, decode
from tests.wire_capture import UDP, Capture, CaptureUnavailable, Connection, Direction, Packet, tcp_connections

SECTION = "wire story"
MAX_LINES = 200
MAX_EXPECTED_LINES = 12
MAX_SHOWN_CHARACTERS = 60          # of one text field
MAX_SHOWN_EVENTS = 4               # of one History or RoomBatch
HIDDEN_FIELDS = ("password",)
_PACKETS = "\0packets\0"       # where a datagram line's packet numbers go
_LISTENING = re.compile(r"listening on \S*:(\d+)")
_PORT_OPTIONS = ("--port", "--broadcast-port")
# Where a test's folder goes, if set (else the temporary folder): a nested
# pytest's run_nested (tests/procs.py) names one of its own, which it deletes
# once the run is over, however it ended, a SIGKILL included.
FOLDER_VARIABLE = "CHAT_LAB_WIRE_STORY_FOLDERS"


# --- Decoding: bytes and a key log in, numbered lines out ----------------------------------

def describe(message) -> str:
    """A message as one line: its type and fields, passwords and keys hidden."""
    shown = []
    for field in dataclasses.fields(message):
        value = getattr(message, field.name)
        if field.name in HIDDEN_FIELDS:
            text = "***"
        elif isinstance(value, bytes):
            text = f"<{len(value)} bytes>"
        elif isinstance(value, str):
            text = repr(value if len(value) <= MAX_SHOWN_CHARACTERS else value[:MAX_SHOWN_CHARACTERS] + "...")
        elif isinstance(value, tuple) and value and isinstance(value[0], RoomEvent):
            events = [_event(event) for event in value[:MAX_SHOWN_EVENTS]]
            more = len(value) - MAX_SHOWN_EVENTS
            text = "[" + ", ".join(events + ([f"{more} more"] if more > 0 else [])) + "]"
        else:
            text = repr(value)
        shown.append(f"{field.name}={text}")
    return f"{type(message).__name__}({', '.join(shown)})"


def _event(event: RoomEvent) -> str:
    text = f" {event.text!r}" if event.text else ""
    return f"#{event.seq} {event.kind.value} {event.sender}{text}"


def _plaintext(plaintext: bytes) -> str:
    try:
        return describe(decode(plaintext))
    except ProtocolError as error:
        return f"(decrypted, but not a message: {error})"


def _direction_lines(connection: Connection, upstream: bool, keys: keylog.KeyLog) -> list[tuple[int, str]]:
    """The records of one direction, decoded and decrypted."""
    direction: Direction = connection.upstream if upstream else connection.downstream
    sender, receiver = ((connection.client, connection.server) if upstream
                        else (connection.server, connection.client))
    who = (f"client {net.describe(sender)} -> server :{receiver[1]}" if upstream
           else f"server {net.describe(sender)} -> client :{receiver[1]}")
    decoder = RecordDecoder()
    lines: list[tuple[int, str]] = []
    records = 0
    aead, nonce = None, 0
    for index, data in direction.pieces:
        try:
            bodies = decoder.feed(data)
        except ProtocolError as error:
            lines.append((index, f"{who}  not a record: {error}; the rest of this direction is not decoded"))
            return lines
        for body in bodies:
            records += 1
            size = f"record {len(body) + 2} B"
            if records == 1:
                what = "handshake 1" if upstream else "handshake 2"
                if upstream:
                    what += f" (initiator's key {body[:4].hex()}...)"
                lines.append((index, f"{who}  {size}  {what}"))
                continue
            if aead is None:
                session = keys.sessions.get(_initiator_ephemeral(connection))
                if session is None:
                    lines.append((index, f"{who}  {size}  (encrypted, no key)"))
                    continue
                aead = ChaCha20Poly1305(session[0] if upstream else session[1])
            try:
                # As in the Noise transport: the nonce is the record's count, never sent,
                # and the two length bytes are the associated data.
                plaintext = aead.decrypt(bytes(4) + nonce.to_bytes(8, "little"), body,
                                         len(body).to_bytes(2, "big"))
            except InvalidTag:
                lines.append((index, f"{who}  {size}  (does not decrypt with the logged key)"))
                continue
            nonce += 1
            lines.append((index, f"{who}  {size}  {_plaintext(plaintext)}"))
    if direction.missing_bytes:
        lines.append((direction.pieces[-1][0] if direction.pieces else connection.first_index,
                      f"{who}  (the capture missed some bytes here: later records are not shown)"))
    return lines


def _initiator_ephemeral(connection: Connection) -> bytes:
    """The first 32 bytes of handshake record 1's body: the session's name in a key log."""
    stream = b""
    for _, data in connection.upstream.pieces:
        stream += data
        if len(stream) >= 2 + keylog.KEY_BYTES:
            break
    return stream[2:2 + keylog.KEY_BYTES]


def _datagram_line(packet: Packet, keys: keylog.KeyLog) -> _Line:
    who = f"{net.describe(packet.source)} -> {net.describe(packet.destination)}  datagram {len(packet.payload)} B"
    datagram = packet.payload
    if len(datagram) < DATAGRAM_OVERHEAD_BYTES:
        return _Line(packet.index, f"{who}  (not a room datagram: too short)")
    version, epoch, number = DATAGRAM_HEADER.unpack_from(datagram)
    where = f"epoch {epoch} {_PACKETS}"
    header, ciphertext = datagram[:DATAGRAM_HEADER.size], datagram[DATAGRAM_HEADER.size:-SIGNATURE_BYTES]
    for key in keys.room_keys.get(epoch, []):
        try:
            plaintext = ChaCha20Poly1305(key).decrypt(datagram_nonce(number), ciphertext, header)
        except InvalidTag:
            continue
        return _Line(packet.index, f"{who}  {where}  {_plaintext(plaintext)}", [number])   # signature unchecked
    return _Line(packet.index, f"{who}  version {version} {where}  (encrypted, no key)", [number])


@dataclasses.dataclass
class _Line:
    """One line of the story; a datagram's has a place for its packet numbers."""
    index: int
    text: str
    packets: list[int] = dataclasses.field(default_factory=list)

    def render(self) -> str:
        if not self.packets:
            return self.text
        if len(self.packets) == 1:
            return self.text.replace(_PACKETS, f"packet {self.packets[0]}")
        numbers = f"packets {self.packets[0]}-{self.packets[-1]}"
        return self.text.replace(_PACKETS, numbers) + f"  ({len(self.packets)} alike)"


def _alike_datagrams_as_one(lines: list[_Line]) -> list[_Line]:
    """A run of datagrams that differ only in their packet number (the
    heartbeats of a quiet room, 4 a second) becomes one line."""
    merged: list[_Line] = []
    for line in lines:
        if line.packets and merged and merged[-1].packets and merged[-1].text == line.text:
            merged[-1].packets += line.packets
        else:
            merged.append(line)
    return merged


def tell(packets: list[Packet], keys: keylog.KeyLog, max_lines: int = MAX_LINES) -> list[str]:
    """The story of ``packets``: one numbered line per connection event,
    record and datagram, in the order of the capture; the last
    ``max_lines`` of them, after a line saying how many were left out."""
    events: list[tuple[int, str]] = []
    for connection in tcp_connections(packets):
        who = f"client {net.describe(connection.client)} -> server :{connection.server[1]}"
        if connection.opened:
            events.append((connection.first_index, f"{who}  connect"))
        for upstream in (True, False):
            events += _direction_lines(connection, upstream, keys)
        for index, sender, flag in connection.ends:
            role = "client" if sender == connection.client else "server"
            what = "closes (FIN)" if flag == "FIN" else "resets the connection (RST)"
            events.append((index, f"{role} {net.describe(sender)}  {what}"))
    lines = [_Line(index, text) for index, text in events]
    lines += [_datagram_line(packet, keys) for packet in packets if packet.protocol == UDP]
    lines.sort(key=lambda line: line.index)    # stable: a packet's records keep their order
    lines = [f"#{number:<3} {line.render()}"
             for number, line in enumerate(_alike_datagrams_as_one(lines), start=1)]
    if len(lines) > max_lines:
        lines = [f"... {len(lines) - max_lines} earlier lines left out"] + lines[-max_lines:]
    return lines


# --- The plugin: one capture and one key log per test --------------------------------------

class TestWire:
    """One test's capture, key log and ports; created when it starts a program."""

    __test__ = False   # a name that starts with "Test", but not a test class

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="wire-story-", dir=os.environ.get(FOLDER_VARIABLE)))
        self.keylog_path = self.folder / "keys.log"
        self.capture: Capture | None = None
        self.unavailable = ""
        try:
            self.capture = Capture()
        except CaptureUnavailable as error:
            self.unavailable = str(error)
        self.told = False
        # The test's own sessions (tests/raw_peer.py) go in the same log.
        keylog.open_key_log(str(self.keylog_path))

    def watch(self, port: int) -> None:
        if self.capture is not None and port:
            self.capture.ports.add(port)

    def story(self, expected: str) -> str:
        if self.capture is None:
            lines = [f"no capture: {self.unavailable}"]
        else:
            packets = self.capture.stop()
            keys = keylog.parse(self.keylog_path.read_text(encoding="ascii", errors="replace"))
            ports = ", ".join(map(str, sorted(self.capture.ports))) or "(none known yet)"
            lines = [f"what crossed {self.capture.interface} on the test's ports ({ports}), decrypted with its "
                     f"key log:"]
            lines += tell(packets, keys) or ["(nothing)"]
            if self.capture.full:
                lines.append("(the capture reached its bound and stopped keeping packets)")
        # The message up to the programs' output, which the report shows already.
        expected_lines = expected.split("\n--- ")[0].splitlines()[:MAX_EXPECTED_LINES]
        return "\n".join(lines + ["expected:"] + [f"    {line}" for line in expected_lines]) + "\n"

    def close(self) -> None:
        if self.capture is not None:
            self.capture.stop()
        keylog.close_key_log()
        shutil.rmtree(self.folder, ignore_errors=True)


_current: TestWire | None = None
_running = False     # between a test's setup and teardown


def process_environment(args: list[str]) -> dict[str, str]:
    """Called by tests/procs.py for each program a test starts: start the
    test's capture (the first time), watch the ports in ``args``, and return
    the environment that switches its key log on."""
    global _current
    if not _running:
        return {}
    if _current is None:
        _current = TestWire()
    for option, value in zip(args, args[1:]):
        if option in _PORT_OPTIONS and value.isdigit():
            _current.watch(int(value))
    return {keylog.ENVIRONMENT_VARIABLE: str(_current.keylog_path)}


def watch_output_line(line: str) -> None:
    """Called with each line a program writes to stderr: a server's
    ``listening on HOST:PORT`` names a port to watch (port 0 picks one)."""
    match = _LISTENING.search(line)
    if match and _current is not None:
        _current.watch(int(match.group(1)))


def watch_port(port: int) -> None:
    """Watch ``port`` too (a server started by hand, pytest --attach)."""
    if _current is not None:
        _current.watch(port)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _running
    _running = True


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # trylast: this wrapper sits inside the grader's (tests/grading.py), so the
    # section is on the report before the grader reads it.
    outcome = yield
    report = outcome.get_result()
    if report.failed and _current is not None and not _current.told:
        _current.told = True
        expected = call.excinfo.exconly() if call.excinfo else report.longreprtext
        report.sections.append((SECTION, _current.story(expected)))
    if call.when == "teardown":    # the test's programs are gone: so is its capture
        _end_test()


def pytest_unconfigure(config: pytest.Config) -> None:
    # A run can end before its test's teardown report: a Ctrl-C (or run_nested's
    # SIGINT, tests/procs.py) mid-test, or a hook that raises, ends the session at
    # once. pytest still unconfigures its plugins, so the test's key log, a secret
    # (docs/grading.md), goes here then.
    _end_test()


def _end_test() -> None:
    global _current, _running
    _running = False
    if _current is not None:
        current, _current = _current, None
        current.close()
