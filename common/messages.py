"""Every message of both labs, and the strict binary codec that carries them.

A message is a small frozen dataclass. On the wire it is one type byte
followed by its fields in declaration order:

    str      u16 big-endian byte length, then that many bytes of UTF-8
    int      u64 big-endian (sequence numbers, epochs)
    bytes    u16 big-endian length, then the raw bytes (keys)
    names    u16 count, then each name as a str          (tuple[str, ...])
    events   u16 count, then each RoomEvent as u16 length + its encoding
    event    one RoomEvent as u16 length + its encoding

The decoder is strict on purpose: an unknown type, a short field, invalid
UTF-8, an over-long string or bytes left over after the last field all raise
``ProtocolError``. A lenient parser is how one bad peer corrupts a server.
``docs/protocol.md`` lists every type code; a test keeps the two in step.
"""
from __future__ import annotations

import enum
import struct
import unicodedata
from dataclasses import dataclass, fields
from typing import ClassVar, Union, get_type_hints

from common.errors import ProtocolError

# Text must fit one room datagram (1200 bytes on the wire, see framing.py),
# with room left for the header, tag, signature and the event's other fields.
MAX_TEXT_BYTES = 1000
MAX_LIST_ITEMS = 1000

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


# --- Session messages: both labs ------------------------------------------------

@dataclass(frozen=True)
class Register:
    """Client -> server: create an account, then log in with it."""
    name: str
    password: str
    TYPE: ClassVar[int] = 1


@dataclass(frozen=True)
class Login:
    """Client -> server: log in to an existing account."""
    name: str
    password: str
    TYPE: ClassVar[int] = 2


@dataclass(frozen=True)
class LoginAccepted:
    """Server -> client: you are in, as ``name``; the server is ``server_name``."""
    name: str
    server_name: str
    TYPE: ClassVar[int] = 3


@dataclass(frozen=True)
class LoginRejected:
    """Server -> client: why the login failed (one generic text for bad credentials)."""
    reason: str
    TYPE: ClassVar[int] = 4


@dataclass(frozen=True)
class ChatMessage:
    """Lab 1, both ways: one line of the one-to-one chat."""
    sender: str
    text: str
    TYPE: ClassVar[int] = 5


@dataclass(frozen=True)
class Goodbye:
    """Either way: I am closing this session, and why (quit, busy, shutdown)."""
    reason: str
    TYPE: ClassVar[int] = 6


@dataclass(frozen=True)
class ErrorNotice:
    """Server -> one client: your last request broke a rule (rate, length...)."""
    text: str
    TYPE: ClassVar[int] = 7


@dataclass(frozen=True)
class PrivateMessage:
    """A DM. The client fills ``sender`` with its own name; the server checks it."""
    sender: str
    recipient: str
    text: str
    TYPE: ClassVar[int] = 8


@dataclass(frozen=True)
class IgnoreUser:
    """Client -> server: drop DMs from ``name`` and hide its room messages."""
    name: str
    TYPE: ClassVar[int] = 9


@dataclass(frozen=True)
class UnignoreUser:
    """Client -> server: stop ignoring ``name``."""
    name: str
    TYPE: ClassVar[int] = 10


@dataclass(frozen=True)
class IgnoreList:
    """Server -> client: whom you ignore (sent at login and after every change)."""
    names: tuple[str, ...]
    TYPE: ClassVar[int] = 11


@dataclass(frozen=True)
class WhoRequest:
    """Client -> server: who is in the room?"""
    TYPE: ClassVar[int] = 12


@dataclass(frozen=True)
class MemberList:
    """Server -> client: the members, server first."""
    names: tuple[str, ...]
    TYPE: ClassVar[int] = 13


@dataclass(frozen=True)
class ChangeName:
    """Client -> server (Lab 2): show me as ``name`` from now on (/nick)."""
    name: str
    TYPE: ClassVar[int] = 14


# --- Lab 2: the room ------------------------------------------------------------

@dataclass(frozen=True)
class Say:
    """Client -> server: a room message. It comes back as a numbered RoomEvent."""
    text: str
    TYPE: ClassVar[int] = 20


class EventKind(str, enum.Enum):
    """What a room event is. On the wire, its value as a str field."""
    SAY = "say"          # sender said text
    JOIN = "join"        # sender joined; text is empty
    LEAVE = "leave"      # sender left; text is empty
    RENAME = "rename"    # sender (the old name) is now text (the new name)
    RECLAIM = "reclaim"  # sender, a shown name an account owns, is text (the member's own account) again
    REMOVE = "remove"    # the server removed sender from the room; text says why
    MUTE = "mute"        # sender may not speak for a while; text says how long ("10 min")
    UNMUTE = "unmute"    # sender may speak again; text is empty
    NOT_KEPT = "not_kept"   # the events up to this number are no longer kept; sender is the server


@dataclass(frozen=True)
class RoomEvent:
    """One numbered entry of the room's log, the same on every screen."""
    seq: int
    kind: EventKind
    sender: str
    text: str
    TYPE: ClassVar[int] = 21


@dataclass(frozen=True)
class RoomKey:
    """Server -> client: the key that seals room datagrams from ``epoch`` on,
    and the server's Ed25519 public key that signs them."""
    epoch: int
    key: bytes
    signing_key: bytes
    TYPE: ClassVar[int] = 22


@dataclass(frozen=True)
class RepairRequest:
    """Client -> server: send me every room event after ``after_seq``."""
    after_seq: int
    TYPE: ClassVar[int] = 23


@dataclass(frozen=True)
class History:
    """Server -> client over TCP: a run of logged events (a repair, or a late
    joiner's history), and the newest number the log holds."""
    events: tuple[RoomEvent, ...]
    latest_seq: int
    TYPE: ClassVar[int] = 24


@dataclass(frozen=True)
class HistoryStart:
    """Server -> client over TCP, before the History of someone who lacks events
    the server no longer keeps (a late joiner, a member far behind). ``summary``
    (kind NOT_KEPT) stands for every event up to its number; ``running_hash`` is
    the transcript hash after them, and ``members`` who was in the room then,
    each as its shown name, or "shown account" if it had renamed: the asker's
    screen goes on from there as every other screen does."""
    summary: RoomEvent
    running_hash: bytes
    members: tuple[str, ...]
    TYPE: ClassVar[int] = 27


@dataclass(frozen=True)
class RoomBatch:
    """The plaintext of one room datagram: a few events, and the newest number.

    With no events it is the heartbeat that lets a client notice a lost last
    message.
    """
    events: tuple[RoomEvent, ...]
    latest_seq: int
    TYPE: ClassVar[int] = 25


@dataclass(frozen=True)
class RoomGroup:
    """Server -> client, right after LoginAccepted, only when the room is
    multicast: its datagrams go to ``group`` (on BROADCAST_PORT), so join it."""
    group: str
    TYPE: ClassVar[int] = 26


Message = Union[
    Register, Login, LoginAccepted, LoginRejected, ChatMessage, Goodbye,
    ErrorNotice, PrivateMessage, IgnoreUser, UnignoreUser, IgnoreList,
    WhoRequest, MemberList, ChangeName, Say, RoomEvent, RoomKey, RepairRequest, History,
    RoomBatch, RoomGroup, HistoryStart,
]
MESSAGE_TYPES: dict[int, type] = {cls.TYPE: cls for cls in Message.__args__}


# Text that one member sends is drawn on every other member's screen, so a
# message may hold nothing that changes how *other* lines look. These are
# refused, in both labs, by the sender's program and again by the server:
REFUSED_CATEGORIES = {
    "Cc": "a control character",                      # newline, escape: a new line, a repainted terminal
    "Cf": "an invisible formatting character",        # zero-width space (U+200B), word joiner, BOM
    "Zl": "a line separator",                         # U+2028: a new line on some screens
    "Zp": "a paragraph separator",                    # U+2029
    "Cs": "a surrogate",                              # half of a UTF-16 pair: not text
    "Co": "a private-use character",                  # shows as whatever a font likes
    "Cn": "an unassigned code point",                 # may become any of the above one day
}
# Bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) reorder a whole run of
# text: "\u202e" shows the letters after it backwards, so a message can read as something it
# does not say ("Trojan Source", CVE-2021-42574). Refused, with their own name.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
BIDI_CONTROL = "a bidirectional override or isolate"
# Format characters (Cf) that the world's scripts need, allowed despite their category. None of
# them reorders letters or starts a line:
# - ZWNJ and ZWJ (U+200C, U+200D): Persian "می‌خواهم", Hindi "क्‍ष", and emoji sequences (👨‍👩‍👧);
# - the bidi *marks* LRM, RLM, ALM (U+200E, U+200F, U+061C): a zero-width letter of one direction,
#   which places the digits and punctuation next to it in Arabic or Hebrew text;
# - the soft hyphen (U+00AD), and the Mongolian vowel separator (U+180E), which shapes a word.
# They draw nothing, so a run of blanks goes on through them, as through a combining mark.
INVISIBLE_TEXT_FORMAT = frozenset("\u200c\u200d\u200e\u200f\u061c\u00ad\u180e")
# Signs that span the digits after them (Arabic number and year signs, end of ayah, ...): visible.
VISIBLE_TEXT_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2"
                                "\U000110bd\U000110cd")
# Tag characters (U+E0020-U+E007F) spell a subdivision flag after a black flag: 🏴 + "gbsct" in
# tags + cancel tag is Scotland's flag. Anywhere else they are invisible letters: refused.
BLACK_FLAG, TAGS = "\U0001f3f4", range(0xE0020, 0xE0080)
MAX_TAG_RUN = 8         # the longest flag sequence is 6 tags and a cancel tag
STRAY_TAG = "a tag character outside a flag"
MAX_COMBINING_RUN = 4   # accents stacked on one letter: more would draw over the lines above
MAX_SPACE_RUN = 8       # a longer run of spaces could wrap text onto what looks like its own line
# Letters and symbols that draw nothing: they count as spaces in that run.
BLANK_LOOKING = frozenset("\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")


def checked_text(text: str) -> str:
    """Return chat text that may be sent: one line, not blank, at most
    MAX_TEXT_BYTES of UTF-8, and nothing that could disguise itself as
    another line on someone else's screen (REFUSED_CATEGORIES but for the
    format characters text needs, BIDI_CONTROLS, tags outside a flag, runs
    of more than MAX_COMBINING_RUN combining marks or MAX_SPACE_RUN spaces
    or BLANK_LOOKING characters).
    Raises ProtocolError, naming the first offending code point, otherwise.
    """
    if not "".join(char for char in text if char not in INVISIBLE_TEXT_FORMAT).strip():
        raise ProtocolError("an empty message was not sent")
    combining_run = space_run = tag_run = 0
    previous = ""
    for char in text:
        category = unicodedata.category(char)
        tag_run = tag_run + 1 if ord(char) in TAGS and (tag_run or previous == BLACK_FLAG) else 0
        previous = char
        if char in BIDI_CONTROLS:
            raise ProtocolError(f"a message may not contain {BIDI_CONTROL} (U+{ord(char):04X})")
        if tag_run > MAX_TAG_RUN or (ord(char) in TAGS and not tag_run):
            raise ProtocolError(f"a message may not contain {STRAY_TAG} (U+{ord(char):04X})")
        if char in INVISIBLE_TEXT_FORMAT:
            continue   # draws nothing: neither ends a run of marks or blanks nor counts in one
        if category in REFUSED_CATEGORIES and not (tag_run or char in VISIBLE_TEXT_FORMAT):
            raise ProtocolError(f"a message may not contain {REFUSED_CATEGORIES[category]} "
                                f"(U+{ord(char):04X})")
        combining_run = combining_run + 1 if category in ("Mn", "Me") else 0
        if category == "Zs" or char in BLANK_LOOKING:
            space_run += 1
        elif not combining_run and not tag_run:   # a mark (U+034F, a variation selector) is no end to a blank run
            space_run = 0
        if combining_run > MAX_COMBINING_RUN:
            raise ProtocolError(f"a message may not stack more than {MAX_COMBINING_RUN} combining marks")
        if space_run > MAX_SPACE_RUN:
            raise ProtocolError(f"a message may not hold more than {MAX_SPACE_RUN} spaces in a row")
    if len(text.encode("utf-8", errors="replace")) > MAX_TEXT_BYTES:
        raise ProtocolError(f"a message is at most {MAX_TEXT_BYTES} bytes of UTF-8")
    return text


def typed_text(line: str, commands: tuple[str, ...]) -> str:
    """The chat text of a line the user typed, which is none of ``commands``.

    A line that starts with "/" must be a command: a typo ("/mgs bob a
    secret") would otherwise go to the whole room. "//" at the start stands
    for one "/". Raises ProtocolError for an unknown command, and whatever
    checked_text() raises.
    """
    if line.startswith("//"):
        return checked_text(line[1:])
    if line.startswith("/"):
        raise ProtocolError(f"{line.split()[0]} is no command: the commands are {', '.join(commands)} "
                            "(start a line with // to say something that begins with /)")
    return checked_text(line)


# --- The codec --------------------------------------------------------------------

def encode(message: Message) -> bytes:
    """Return the wire bytes of ``message``. Raises ProtocolError if a field
    is out of range (an over-long text, a negative number)."""
    cls = type(message)
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", None)) is not cls:
        raise ProtocolError(f"{cls.__name__} is not a protocol message")
    out = bytearray([cls.TYPE])
    for field, kind in _layout(cls):
        _WRITERS[kind](out, getattr(message, field), field)
    return bytes(out)


def decode(data: bytes) -> Message:
    """Parse exactly one message from ``data``. Raises ProtocolError on an
    unknown type, a truncated or over-long field, invalid UTF-8, or bytes
    left over after the last field."""
    return _decode_span(bytes(data), 0, len(data))


def _decode_span(data: bytes, start: int, end: int) -> Message:
    """Decode the message in data[start:end] without copying it out first:
    a room datagram holds many events, and every member decodes every one."""
    if start >= end:
        raise ProtocolError("empty message")
    cls = MESSAGE_TYPES.get(data[start])
    if cls is None:
        raise ProtocolError(f"unknown message type {data[start]}")
    offset, values = start + 1, []
    for field, kind in _layout(cls):
        value, offset = _READERS[kind](data, offset, end, field)
        values.append(value)
    if offset != end:
        raise ProtocolError(f"{end - offset} unexpected bytes after {cls.__name__}")
    return cls(*values)


_LAYOUTS: dict[type, list[tuple[str, str]]] = {}


def _layout(cls: type) -> list[tuple[str, str]]:
    """The (field name, wire kind) pairs of a message class, from its type hints."""
    if cls not in _LAYOUTS:
        hints = get_type_hints(cls)
        kinds = {str: "str", int: "int", bytes: "bytes", EventKind: "kind",
                 tuple[str, ...]: "names", tuple[RoomEvent, ...]: "events", RoomEvent: "event"}
        _LAYOUTS[cls] = [(f.name, kinds[hints[f.name]]) for f in fields(cls)]
    return _LAYOUTS[cls]


# Each reader takes (data, offset, end, field name), checks that what it reads
# lies before ``end``, and returns (value, offset just after it).

def _read_length(data: bytes, offset: int, end: int, field: str, limit: int) -> tuple[int, int]:
    """A u16 length or count, checked against ``limit`` before anything is read."""
    if offset + 2 > end:
        raise ProtocolError(f"message ends in the middle of field '{field}'")
    length = _U16.unpack_from(data, offset)[0]
    if length > limit:
        raise ProtocolError(f"field '{field}' is {length} long; the limit is {limit}")
    return length, offset + 2


def _read_bytes(data: bytes, offset: int, end: int, field: str) -> tuple[bytes, int]:
    length, offset = _read_length(data, offset, end, field, MAX_TEXT_BYTES)
    if offset + length > end:
        raise ProtocolError(f"message ends in the middle of field '{field}'")
    return data[offset:offset + length], offset + length


def _read_str(data: bytes, offset: int, end: int, field: str) -> tuple[str, int]:
    raw, offset = _read_bytes(data, offset, end, field)
    try:
        return raw.decode("utf-8"), offset
    except UnicodeDecodeError:
        raise ProtocolError(f"field '{field}' is not valid UTF-8") from None


def _read_kind(data: bytes, offset: int, end: int, field: str) -> tuple[EventKind, int]:
    value, offset = _read_str(data, offset, end, field)
    try:
        return EventKind(value), offset
    except ValueError:
        raise ProtocolError(f"unknown room event kind {value!r}") from None


def _read_int(data: bytes, offset: int, end: int, field: str) -> tuple[int, int]:
    if offset + 8 > end:
        raise ProtocolError(f"message ends in the middle of field '{field}'")
    return _U64.unpack_from(data, offset)[0], offset + 8


def _read_names(data: bytes, offset: int, end: int, field: str) -> tuple[tuple[str, ...], int]:
    count, offset = _read_length(data, offset, end, field, MAX_LIST_ITEMS)
    names = []
    for _ in range(count):
        name, offset = _read_str(data, offset, end, field)
        names.append(name)
    return tuple(names), offset


def _read_events(data: bytes, offset: int, end: int, field: str) -> tuple[tuple[RoomEvent, ...], int]:
    count, offset = _read_length(data, offset, end, field, MAX_LIST_ITEMS)
    events = []
    for _ in range(count):
        event, offset = _read_event(data, offset, end, field)
        events.append(event)
    return tuple(events), offset


def _read_event(data: bytes, offset: int, end: int, field: str) -> tuple[RoomEvent, int]:
    length, offset = _read_length(data, offset, end, field, end - offset - 2)
    # Check the type byte before decoding, so nested bytes cannot make the
    # decoder recurse into another list of events.
    if length == 0 or data[offset] != RoomEvent.TYPE:
        raise ProtocolError(f"field '{field}' must hold RoomEvents")
    return _decode_span(data, offset, offset + length), offset + length


def _write_str(out: bytearray, value: object, field: str) -> None:
    if not isinstance(value, str):
        raise ProtocolError(f"field '{field}' must be text")
    raw = _utf8(value, field)
    if len(raw) > MAX_TEXT_BYTES:
        raise ProtocolError(f"field '{field}' is {len(raw)} bytes; the limit is {MAX_TEXT_BYTES}")
    out += _U16.pack(len(raw)) + raw


def _utf8(value: str, field: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot travel as UTF-8
        raise ProtocolError(f"field '{field}' is not valid Unicode text") from None


def _write_kind(out: bytearray, value: object, field: str) -> None:
    try:
        kind = EventKind(value)   # an EventKind, or its str value
    except ValueError:
        raise ProtocolError(f"field '{field}' must be one of {', '.join(k.value for k in EventKind)}") from None
    _write_str(out, kind.value, field)


def _write_int(out: bytearray, value: object, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ProtocolError(f"field '{field}' must be a whole number from 0 to 2**64-1")
    out += _U64.pack(value)


def _write_bytes(out: bytearray, value: object, field: str) -> None:
    if not isinstance(value, bytes) or len(value) > MAX_TEXT_BYTES:
        raise ProtocolError(f"field '{field}' must be at most {MAX_TEXT_BYTES} bytes")
    out += _U16.pack(len(value)) + value


def _write_list(out: bytearray, value: object, field: str, item_writer) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_LIST_ITEMS:
        raise ProtocolError(f"field '{field}' must be a tuple of at most {MAX_LIST_ITEMS} items")
    out += _U16.pack(len(value))
    for item in value:
        item_writer(out, item, field)


def _write_event(out: bytearray, value: object, field: str) -> None:
    if not isinstance(value, RoomEvent):
        raise ProtocolError(f"field '{field}' must hold RoomEvents")
    raw = encode(value)
    out += _U16.pack(len(raw)) + raw


_WRITERS = {
    "str": _write_str,
    "kind": _write_kind,
    "int": _write_int,
    "bytes": _write_bytes,
    "names": lambda out, value, field: _write_list(out, value, field, _write_str),
    "events": lambda out, value, field: _write_list(out, value, field, _write_event),
    "event": _write_event,
}
_READERS = {
    "str": _read_str,
    "kind": _read_kind,
    "int": _read_int,
    "bytes": _read_bytes,
    "names": _read_names,
    "events": _read_events,
    "event": _read_event,
}
