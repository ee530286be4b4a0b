"""The server's chat rules for the Lab 2 room, without any I/O.

The server is the sequencer: every room event (a message, a join, a leave,
a rename) gets the next number and goes into the log, and that numbered
event is what every screen shows. Clients never echo their own text, so
every screen shows the same lines in the same order.

``Room`` takes what members asked for and returns ``Delivery`` pairs: to one
member's session (``to`` is its connection id), or to the whole room
(``to is ROOM``: the server broadcasts it). Who gets a DM and who is ignored
are decided here, so the rules are tested without a socket.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
import time

from common.accounts import AccountStore, normalise_name
from common.errors import ProtocolError
from common.framing import MAX_DATAGRAM_PLAINTEXT_BYTES
from common.messages import (
    ErrorNotice, History, IgnoreList, IgnoreUser, LoginAccepted, LoginRejected,
    MemberList, Message, PrivateMessage, RepairRequest, RoomBatch, RoomEvent, Say,
    UnignoreUser, WhoRequest, checked_text, encode,
)

ROOM = None                       # the address of "everybody", for Delivery.to
HISTORY_CHUNK_BYTES = 12000       # one History message stays well inside a TCP record
MAX_HISTORY_EVENTS = 500          # one answer's worth: a client that needs more asks again
BATCH_OVERHEAD_BYTES = 1 + 2 + 8  # RoomBatch's type byte, event count and latest_seq


@dataclass(frozen=True)
class Delivery:
    """Send ``message`` to one member's session, or to the room if ``to is ROOM``."""
    to: Hashable | None
    message: Message


def not_delivered(recipient: str) -> str:
    """The one reply for a DM that did not arrive. It never says why, so a
    sender cannot find out who ignores them."""
    return f"your message to {recipient} was not delivered"


class Room:
    """Members, the numbered log, DMs, ignore lists and per-member rate limits."""

    def __init__(self, server_name: str, accounts: AccountStore, *, max_members: int = 250,
                 max_messages_per_second: float = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.server_name = normalise_name(server_name)
        self.accounts = accounts
        self.max_members = max_members
        self.max_messages_per_second = max_messages_per_second
        self.clock = clock
        self.log: list[RoomEvent] = []
        self.members: dict[Hashable, str] = {}
        self._allowance: dict[Hashable, tuple[float, float]] = {}   # conn -> (tokens, when)
        self._handlers = {
            Say: self._handle_say, PrivateMessage: self._handle_private_message,
            IgnoreUser: self._handle_ignore, UnignoreUser: self._handle_unignore,
            WhoRequest: self._handle_who, RepairRequest: self._handle_repair,
        }

    @property
    def latest_seq(self) -> int:
        """The number of the newest logged event (0 before the first)."""
        return len(self.log)

    # --- joining and leaving ------------------------------------------------------

    def join(self, conn: Hashable, name: str) -> list[Delivery]:
        """Admit ``name`` (already authenticated) on connection ``conn``.

        Returns the welcome, the member's ignore list and the history so far
        for the newcomer, then the numbered join event for everybody.
        """
        if name in self.members.values() or name == self.server_name:
            return [Delivery(conn, LoginRejected(f"{name} is already in the room"))]
        if len(self.members) >= self.max_members:
            return [Delivery(conn, LoginRejected("the room is full; try again later"))]
        self.members[conn] = name
        self._allowance[conn] = (self.max_messages_per_second, self.clock())
        welcome = [Delivery(conn, LoginAccepted(name, self.server_name)),
                   Delivery(conn, IgnoreList(tuple(sorted(self.accounts.ignored_by(name)))))]
        return welcome + [Delivery(conn, h) for h in self.history_after(0)] + self._log("join", name, "")

    def leave(self, conn: Hashable) -> list[Delivery]:
        """Forget ``conn``; returns the numbered leave event (nothing if it never joined)."""
        self._allowance.pop(conn, None)
        name = self.members.pop(conn, None)
        return self._log("leave", name, "") if name else []

    # --- what members ask for -----------------------------------------------------

    def handle(self, conn: Hashable, message: Message) -> list[Delivery]:
        """Apply one request from a joined member; returns what to deliver.

        A broken rule (rate, empty text, unknown name) is answered with an
        ErrorNotice to that member only. A message that has no business
        arriving here raises ProtocolError: the server drops that peer.
        """
        if conn not in self.members:
            raise ProtocolError("log in before anything else")
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"a client may not send {type(message).__name__}")
        try:
            return handler(conn, self.members[conn], message)
        except ProtocolError as error:
            return [Delivery(conn, ErrorNotice(str(error)))]

    def server_says(self, text: str) -> list[Delivery]:
        """The server takes part in the room: its lines are numbered like anyone's."""
        return self._log("say", self.server_name, checked_text(text))

    def rename_server(self, new_name: str) -> list[Delivery]:
        """Change the server's name; the room sees a numbered rename event."""
        new_name = normalise_name(new_name)
        if new_name in self.members.values():
            raise ProtocolError(f"{new_name} is taken by a member")
        old_name, self.server_name = self.server_name, new_name
        return self._log("rename", old_name, new_name)

    def history_after(self, seq: int) -> list[History]:
        """Up to MAX_HISTORY_EVENTS logged events after ``seq``, cut into History
        messages that each fit one record. Always at least one, so the asker
        learns latest_seq, and with it whether to ask for more.

        The cap bounds the work one small request can cause: a late joiner of
        a long room, or a client asking again and again, gets the log in
        pieces, each only once it asks for it.
        """
        return [History(chunk, self.latest_seq)
                for chunk in pack_events(self.log[seq:seq + MAX_HISTORY_EVENTS], HISTORY_CHUNK_BYTES)]

    def batches(self, events: list[RoomEvent]) -> list[RoomBatch]:
        """Pack fresh events into as few room datagrams as fit (a heartbeat if
        there are none): one seal and one signature then cover many events.

        Each batch announces its own last number, not the log's newest: a
        client that read the first of two batches must not think the second
        one's events were lost while that one is still on its way.
        """
        return [RoomBatch(chunk, chunk[-1].seq if chunk else self.latest_seq)
                for chunk in pack_events(events, MAX_DATAGRAM_PLAINTEXT_BYTES - BATCH_OVERHEAD_BYTES)]

    def _handle_say(self, conn: Hashable, name: str, message: Say) -> list[Delivery]:
        self._spend_allowance(conn)
        return self._log("say", name, checked_text(message.text))

    def _handle_private_message(self, conn: Hashable, name: str, message: PrivateMessage) -> list[Delivery]:
        self._spend_allowance(conn)
        if message.sender != name:
            raise ProtocolError("a DM's sender must be your own name")
        text = checked_text(message.text)
        recipient = _normalised_or_none(message.recipient)
        target = next((c for c, member in self.members.items() if member == recipient), None)
        if target is None or target == conn or name in self.accounts.ignored_by(recipient):
            return [Delivery(conn, ErrorNotice(not_delivered(message.recipient)))]
        delivered = PrivateMessage(name, recipient, text)
        # Both ends see the DM: the sender's copy confirms it arrived.
        return [Delivery(target, delivered), Delivery(conn, delivered)]

    def _handle_ignore(self, conn: Hashable, name: str, message: IgnoreUser) -> list[Delivery]:
        self._spend_allowance(conn)   # each one is a database write
        self.accounts.ignore(name, normalise_name(message.name))
        return [Delivery(conn, IgnoreList(tuple(sorted(self.accounts.ignored_by(name)))))]

    def _handle_unignore(self, conn: Hashable, name: str, message: UnignoreUser) -> list[Delivery]:
        self._spend_allowance(conn)
        self.accounts.unignore(name, normalise_name(message.name))
        return [Delivery(conn, IgnoreList(tuple(sorted(self.accounts.ignored_by(name)))))]

    def _handle_who(self, conn: Hashable, name: str, message: WhoRequest) -> list[Delivery]:
        return [Delivery(conn, MemberList((self.server_name, *sorted(self.members.values()))))]

    def _handle_repair(self, conn: Hashable, name: str, message: RepairRequest) -> list[Delivery]:
        return [Delivery(conn, history) for history in self.history_after(min(message.after_seq, self.latest_seq))]

    def _log(self, kind: str, sender: str, text: str) -> list[Delivery]:
        event = RoomEvent(self.latest_seq + 1, kind, sender, text)
        self.log.append(event)
        return [Delivery(ROOM, event)]

    def _spend_allowance(self, conn: Hashable) -> None:
        """A token bucket: max_messages_per_second tokens, refilled continuously."""
        tokens, then = self._allowance[conn]
        now = self.clock()
        tokens = min(self.max_messages_per_second, tokens + (now - then) * self.max_messages_per_second)
        if tokens < 1:
            self._allowance[conn] = (tokens, now)
            raise ProtocolError(f"slow down: at most {self.max_messages_per_second:g} messages per second")
        self._allowance[conn] = (tokens - 1, now)


def pack_events(events: list[RoomEvent], limit_bytes: int) -> list[tuple[RoomEvent, ...]]:
    """Cut ``events`` into runs whose encodings (2 length bytes + the event)
    add up to at most ``limit_bytes``. Always returns at least one run."""
    runs: list[list[RoomEvent]] = [[]]
    size = 0
    for event in events:
        event_bytes = len(encode(event)) + 2
        if runs[-1] and size + event_bytes > limit_bytes:
            runs.append([])
            size = 0
        runs[-1].append(event)
        size += event_bytes
    return [tuple(run) for run in runs]


def _normalised_or_none(name: str) -> str | None:
    try:
        return normalise_name(name)
    except ProtocolError:
        return None
