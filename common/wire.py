"""The wire view: every record and datagram, one line each, as it crosses the wire.

Turn it on with ``--wire`` (any role) or the window's "Show the wire" (F2; F6 on macOS).
Each line shows what an eavesdropper sees (sizes, the clear header fields,
the first bytes of ciphertext) beside what only the two ends can read (the
decoded message), and what the receiver made of it::

  -> server  record 50 B  len=48 e=297968a202..  handshake 1/2: psk, e, es
  <- server  record 50 B  len=48 e=eccf8d2d00..  handshake 2/2: e, ee
  -> server  record 42 B  len=40 ct=9e506bd6aa..  Login(name='alice', password=***)
  ~> room  datagram 203 B  v1 epoch=2 pkt=17 ct=f2886d3dbd..  RoomBatch(events 40-42, latest 42)
  <~ 127.0.0.1:41852  datagram 203 B  v1 epoch=2 pkt=17 ct=f2886d3dbd..  RoomBatch(events 40-42, latest 42)  [gap 38-39]
  <~ 127.0.0.1:41852  datagram 203 B  v1 epoch=2 pkt=17 ct=f2886d3dbd..  [duplicate: packet 17 is a replay or too old]

The fields, left to right:

- the direction: ``->`` a record we send, ``<-`` a record we receive (TCP);
  ``~>`` a datagram we send, ``<~`` a datagram we receive (UDP);
- the peer: its address, or ``server``/``client`` when the role did not name
  it; ``room`` for the server's datagrams, which go to every member at once;
- ``record N B``: the whole record, its 2 length bytes included, as TCP
  carries it; ``len=`` the length field (the body: ciphertext and its 16-byte
  tag); ``ct=`` the body's first bytes in hex, or ``e=`` in a handshake
  record, whose body starts with the sender's ephemeral public key in clear;
- ``datagram N B``: the whole UDP payload; then its clear header (version,
  epoch, packet number) and the first bytes of its ciphertext;
- the content: the decoded message, a handshake step, or nothing for a
  datagram that was not opened. A password, and the room key, show as
  ``***``: the view teaches what is on the wire without putting secrets on
  a screen. Long text is cut to its start.
- marks, in brackets, for what the receiver made of it:

  - ``[gap 38-39]``: events the server has logged and we lack (a datagram
    was lost); a RepairRequest will ask for them;
  - ``[repair over TCP: 38-39]``: a History answering our RepairRequest
    delivered these (``history over TCP``: the history sent at login);
  - ``[duplicate 40-42]``: events we had already, dropped (a datagram that
    came late, after its repair);
  - ``[duplicate: packet 17 is a replay or too old]``: a copy of a datagram
    we had opened; the replay window drops it before any costly check;
  - ``[rejected: REASON]``: it failed a check; a member's forgery, sealed
    with the room key but not signed by the server, says ``bad signature``;
  - ``[ignored unopened: REASON]``: not worth a signature check (see
    DatagramGate in common/transcript.py);
  - ``[held: sealed with the room key of epoch 3, which is still on its way]``:
    it overtook its key (which comes over TCP); it is opened, with a line of
    its own, once the key arrives (EarlyDatagrams in common/transcript.py).

  A datagram that arrives before the client has the room key is dropped
  unseen by the role file, before any of these steps: it has no line.

Theory of operation. One ``WireTap`` per process, in ``tap``, like a packet
capture on an interface: the session (common/session.py), the datagram
sealer (common/framing.py) and the client's datagram path
(common/transcript.py) each test ``tap is not None`` and, only then, tell it
what they saw. So the view costs one comparison per record when it is off,
and a role file needs no line of its own for it. A received datagram's line
is pieced together from three steps of the client's loop (the bytes are
opened, the gate names their source, the transcript delivers the events),
so the tap holds a line until it is complete, or until the front end flushes
it at the end of the turn; lines are written in the order they began.

Wire lines are for the eyes only: they go to stdout with the prefix
``wire: `` (common/ui.py), never into the transcript or its hash.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from common.messages import History, HistoryStart, Message, RepairRequest, RoomBatch, decode

SENT_RECORD, RECEIVED_RECORD = "->", "<-"
SENT_DATAGRAM, RECEIVED_DATAGRAM = "~>", "<~"
ROOM = "room"                      # the peer of a datagram the server sends: everyone
HIDDEN = "***"
SECRET_FIELDS = frozenset({"password", "key"})   # never shown: a password, the room key
HEX_PREVIEW_BYTES = 5
TEXT_PREVIEW_CHARS = 32
NAMES_PREVIEW = 5
MAX_HELD_LINES = 1000              # a bound on lines waiting for their last step
# The layout as docs/protocol.md gives it. The view reads the bytes as an
# eavesdropper's tool would, from the document, sharing no code with the codec
# (tests/test_wire.py checks that the two agree).
RECORD_LENGTH_BYTES = 2
_DATAGRAM_HEADER = struct.Struct(">BIQ")   # version (u8), epoch (u32), packet number (u64)


def format_record(direction: str, peer: str, record: bytes, content: Message | str | None,
                  marks: Iterable[str] = ()) -> str:
    """One line for a TCP record: ``record`` is the whole record, its length
    bytes included; ``content`` the message it carries, or a handshake step
    ("handshake 1/2: psk, e, es")."""
    body = record[RECORD_LENGTH_BYTES:]
    length = int.from_bytes(record[:RECORD_LENGTH_BYTES], "big")
    preview = "e" if isinstance(content, str) else "ct"   # a handshake record starts with a key in clear
    return _line(direction, peer, f"record {len(record)} B", f"len={length} {preview}={_hex(body)}",
                 content, marks)


def format_datagram(direction: str, peer: str, datagram: bytes | None, content: Message | None,
                    marks: Iterable[str] = ()) -> str:
    """One line for a room datagram (None: it was not read at all); ``content``
    is the RoomBatch it carries, or None if it was not opened."""
    if datagram is None:
        return _line(direction, peer, "datagram", "", None, marks)
    if len(datagram) < _DATAGRAM_HEADER.size:
        return _line(direction, peer, f"datagram {len(datagram)} B", f"raw={_hex(datagram)}", content, marks)
    version, epoch, number = _DATAGRAM_HEADER.unpack_from(datagram)
    header = f"v{version} epoch={epoch} pkt={number} ct={_hex(datagram[_DATAGRAM_HEADER.size:])}"
    return _line(direction, peer, f"datagram {len(datagram)} B", header, content, marks)


def packet_number(datagram: bytes) -> int | None:
    """The packet number in a datagram's clear header; None if it is too short to have one."""
    if len(datagram) < _DATAGRAM_HEADER.size:
        return None
    return _DATAGRAM_HEADER.unpack_from(datagram)[2]


def describe(content: Message | str | None) -> str:
    """A message as the wire view shows it: ``Login(name='ana', password=***)``,
    ``RoomBatch(events 40-42, latest 42)``; a string (a handshake step) as it is."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, (History, RoomBatch)):
        quiet = "heartbeat" if isinstance(content, RoomBatch) else "no events"
        events = f"events {seq_ranges(event.seq for event in content.events)}" if content.events else quiet
        return f"{type(content).__name__}({events}, latest {content.latest_seq})"
    if isinstance(content, HistoryStart):   # what stands for the events the server no longer keeps
        return (f"HistoryStart(not kept: 1-{content.summary.seq}, hash {_hex(content.running_hash)}, "
                f"{len(content.members)} members)")
    shown = (f"{item.name}={_value(item.name, getattr(content, item.name))}" for item in fields(content))
    return f"{type(content).__name__}({', '.join(shown)})"


def seq_ranges(seqs: Iterable[int]) -> str:
    """Sequence numbers as runs: [38, 39, 40, 42] -> "38-40,42"."""
    runs: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ",".join(str(first) if first == last else f"{first}-{last}" for first, last in runs)


def address(source: tuple) -> str:
    """A socket address as "host:port" ("[::1]:port" for IPv6)."""
    host, port = source[0], source[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _line(direction: str, peer: str, size: str, header: str, content: Message | str | None,
          marks: Iterable[str]) -> str:
    parts = [f"{direction} {peer}", size, header, describe(content), *(f"[{mark}]" for mark in marks)]
    return "  ".join(part for part in parts if part)


def _hex(data: bytes) -> str:
    return data[:HEX_PREVIEW_BYTES].hex() + (".." if len(data) > HEX_PREVIEW_BYTES else "")


def _value(name: str, value: object) -> str:
    if name in SECRET_FIELDS:
        return HIDDEN
    if isinstance(value, bytes):
        return _hex(value)
    if isinstance(value, str):
        # repr() escapes control and invisible characters: a wire line cannot
        # move the cursor or hide text, whatever a peer sends.
        return repr(value) if len(value) <= TEXT_PREVIEW_CHARS else f"{value[:TEXT_PREVIEW_CHARS]!r}..."
    if isinstance(value, tuple):
        more = f", +{len(value) - NAMES_PREVIEW}" if len(value) > NAMES_PREVIEW else ""
        return "(" + ", ".join(map(repr, value[:NAMES_PREVIEW])) + more + ")"
    return str(value)


@dataclass
class _Line:
    """A wire line whose parts may still be on their way."""
    kind: str                      # "record" or "datagram"
    direction: str
    peer: str | None               # None: a received datagram whose source is not named yet
    data: bytes | None
    content: Message | str | None
    marks: list[str] = field(default_factory=list)
    awaiting_marks: bool = False   # its events go to a Transcript, which marks them

    @property
    def complete(self) -> bool:
        return self.peer is not None and not self.awaiting_marks

    def text(self) -> str:
        peer = "?" if self.peer is None else self.peer
        if self.kind == "record":
            return format_record(self.direction, peer, self.data, self.content, self.marks)
        return format_datagram(self.direction, peer, self.data, self.content, self.marks)


class WireTap:
    """Collects what the hooks report and writes one line per record or datagram."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._lines: list[_Line] = []
        self._asked_for_repair = False   # a RepairRequest went out: a History is its answer

    def record(self, direction: str, peer: str, record: bytes, content: Message | str) -> None:
        """A whole record was queued to send, or received and opened (session.py)."""
        if isinstance(content, RepairRequest) and direction == SENT_RECORD:
            self._asked_for_repair = True
        awaiting = direction == RECEIVED_RECORD and isinstance(content, History)
        self._add(_Line("record", direction, peer, bytes(record), content, awaiting_marks=awaiting))

    def datagram_sent(self, datagram: bytes, plaintext: bytes) -> None:
        """The server sealed a room datagram for the room (framing.py)."""
        self._add(_Line("datagram", SENT_DATAGRAM, ROOM, datagram, decode(plaintext)))

    def datagram_opened(self, datagram: bytes, batch: RoomBatch) -> None:
        """A received datagram proved authentic; the gate will name its source,
        the transcript mark its events."""
        self._add(_Line("datagram", RECEIVED_DATAGRAM, None, datagram, batch, awaiting_marks=True))

    def datagram_refused(self, datagram: bytes, mark: str) -> None:
        """A received datagram failed a check; the gate will name its source."""
        self._add(_Line("datagram", RECEIVED_DATAGRAM, None, datagram, None, [mark]))

    def datagram_from(self, source: tuple) -> None:
        """The gate names the source of the datagram just opened or refused."""
        for line in reversed(self._lines):
            if line.kind == "datagram" and line.peer is None:
                line.peer = address(source)
                break
        self._drain()

    def datagram_ignored(self, source: tuple, why: str) -> None:
        """The gate did not think a datagram worth opening."""
        self._add(_Line("datagram", RECEIVED_DATAGRAM, address(source), None, None, [f"ignored unopened: {why}"]))

    def delivered(self, events: tuple, duplicates: list[int], gap: tuple[int, int] | None) -> None:
        """A Transcript took ``events`` (the very tuple of a History or a
        RoomBatch): which it had already, and the first gap left after them."""
        line = next((line for line in self._lines if line.awaiting_marks
                     and getattr(line.content, "events", None) is events), None)
        if line is None:   # not from a line we hold: the server's own screen, say
            return
        news = [event.seq for event in events if event.seq not in duplicates]
        if news and line.kind == "record":
            how = "repair" if self._asked_for_repair else "history"
            line.marks.append(f"{how} over TCP: {seq_ranges(news)}")
        if duplicates:
            line.marks.append(f"duplicate {seq_ranges(duplicates)}")
        if gap is not None:
            line.marks.append(f"gap {gap[0]}-{gap[1]}" if gap[0] != gap[1] else f"gap {gap[0]}")
        line.awaiting_marks = False
        self._drain()

    def flush(self) -> None:
        """Write every line held, complete or not (the end of a loop turn)."""
        lines, self._lines = self._lines, []
        for line in lines:
            self._write(line.text())

    def _add(self, line: _Line) -> None:
        self._lines.append(line)
        if len(self._lines) > MAX_HELD_LINES:
            self.flush()
        self._drain()

    def _drain(self) -> None:
        """Write the complete lines at the front, in the order they began."""
        while self._lines and self._lines[0].complete:
            self._write(self._lines.pop(0).text())


tap: WireTap | None = None   # this process's wire view; None while it is off


def turn_on(write: Callable[[str], None]) -> None:
    """Show the wire from now on, one line at a time through ``write``."""
    global tap
    if tap is not None:
        tap.flush()
    tap = WireTap(write)


def turn_off() -> None:
    """Stop showing the wire (what is held is written first)."""
    global tap
    if tap is not None:
        tap.flush()
    tap = None


def flush() -> None:
    """Write what the tap holds, if it is on: front ends call it after each turn."""
    if tap is not None:
        tap.flush()
