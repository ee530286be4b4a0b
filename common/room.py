"""The Lab 2 room, without any I/O: who is in it, what they may do, and what
goes out when.

Theory of operation
-------------------
The server is the sequencer: every room event (a message, a join, a leave,
a rename) gets the next number and goes into the log, and that numbered
event is what every screen shows. Clients never echo their own text, so
every screen shows the same lines in the same order.

``Room`` is fed what happened (a member joined, left, or asked for
something) and the time, and answers with *instructions*, in the order the
server must carry them out:

* ``Delivery(conn, message)``: send ``message`` over that member's session;
* ``Broadcast(batch)``: seal ``batch`` with the current room key and send
  it, once, to the broadcast address;
* ``NewRoomKey(epoch, key)``: seal with this key from now on;
* ``StoreWrite(conn, write)``: run ``write()`` (an ignore saved in the
  database) off the event loop, then hand its outcome to ``written()``: a
  write may wait for a lock another program holds, and the room must not.

Logged events wait in the outbox until ``tick()`` packs them into
datagrams, when BATCHING (a ``Batching`` rule) says: at once after a quiet
spell; while the room is busy, once a few events wait or the oldest has
waited a few milliseconds, so that one seal and one signature cover many
events. ``wait_at_most()`` tells the loop when that will be. A silent room
sends a heartbeat (an empty batch with the newest number) every
HEARTBEAT_INTERVAL_SECONDS, so a lost last event is noticed.

Names belong to accounts. A member may be shown under another name
(``/nick``), never under an account's name, in the room or not; a name taken
before its account existed is given back (a numbered ``reclaim`` event) as
soon as the room notices: when its owner logs in (and gets in), when the
member showing it asks for anything, when someone addresses it. A DM or an
ignore addresses the account of that name first, and only then a shown name.

When a member leaves, the next tick broadcasts what was logged before the
leave under the old key, makes a new key, hands it to every remaining
member, and only then sends anything newer: the leaver, who knows the old
key, cannot read the room after it left. Many leaves in one round of the
loop cost one new key, not one each, and a new key is made at most once
every ``room_key_interval_seconds``: a member logging in and out in a loop
would otherwise re-key the room all the time, and a datagram sealed two keys
ago cannot be opened by anyone. A leave soon after a re-key waits for the
next one; until then the room goes on under the key the leaver knows.

The log is a window (common/roomlog.py): the newest events, by count and by
bytes. A late joiner, or a repair that asks for older events, gets a
HistoryStart standing for what is no longer kept, then the window.

Every member has a budget (a token bucket) that every request spends;
repairs also spend an allowance of events per second, and the members of one
IP address share an allowance of bytes per second for what repairs and
histories send them: one student with many members gets no more of the
network than one address's share. A member past its
budget is told to slow down (once a second at most), and one that keeps
on flooding is dropped: ``handle()`` raises ProtocolError.

The server's operator decides the rest (common/controls.py reads the
commands): a member it removes leaves with a numbered REMOVE event that
says why, in place of a leave; an account it mutes is refused what would put
words on screens (MUTED_REQUESTS) until the time is up, and the room sees
both the mute and its end. The time of each member's last request is kept,
for the idle limit.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

from common.accounts import AccountStore, normalise_name
from common.admission import TokenBucket, address_key
from common.errors import ProtocolError
from common.framing import MAX_DATAGRAM_PLAINTEXT_BYTES
from common.messages import (
    ChangeName,
    ErrorNotice,
    EventKind,
    History,
    HistoryStart,
    IgnoreList,
    IgnoreUser,
    LoginAccepted,
    LoginRejected,
    MemberList,
    Message,
    PrivateMessage,
    RepairRequest,
    RoomBatch,
    RoomEvent,
    RoomGroup,
    RoomKey,
    Say,
    UnignoreUser,
    WhoRequest,
    checked_text,
    encode,
)
from common.roomlog import RoomLog

HISTORY_CHUNK_BYTES = 12000       # one History message stays well inside a TCP record
MAX_HISTORY_EVENTS = 500          # one answer's worth: a client that needs more asks again
MAX_REPAIR_EVENTS_PER_SECOND = 1000   # what one member's repairs may pull from the log
# What repairs and histories may send the members of one IP address together: 16 Mbit/s, a
# share of a classroom's Wi-Fi. A late joiner's first answer (500 events) always fits.
MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS = 2_000_000
BATCH_OVERHEAD_BYTES = 1 + 2 + 8  # RoomBatch's type byte, event count and latest_seq
# The server's housekeeping (login deadlines, idle members, its notes, accepting again after running
# out of descriptors) runs this often. What the room sends wakes the loop when it is due (wait_at_most):
# a shorter tick would only spend CPU (at 3 ms, 3% of a core for a room where nobody talks).
TICK_SECONDS = 0.1
HEARTBEAT_INTERVAL_SECONDS = 0.25 # the longest the room stays silent
NOTICE_INTERVAL_SECONDS = 1.0     # at most one "slow down" per member per second
FLOOD_WINDOW_SECONDS = 10.0       # refused requests are counted over this window ...
MAX_REFUSED_PER_WINDOW = 100      # ... and a member refused more often is dropped
# Each answer to a rename says whether a name has an account: at this pace, nobody lists them.
MAX_RENAMES_PER_ADDRESS, RENAME_WINDOW_SECONDS = 10, 60.0   # tried, by the members of one address
MAX_ADDRESSES_REMEMBERED = 10000
MAX_WRITES_WAITING = 8            # a member's ignores not yet saved: a locked database holds them
ROOM_KEY_BYTES = 32
# The defaults of the settings ROOM_HISTORY_EVENTS, ROOM_HISTORY_BYTES and ROOM_KEY_INTERVAL_MS
# (common/config.py says why these numbers).
ROOM_HISTORY_EVENTS, ROOM_HISTORY_BYTES, ROOM_KEY_INTERVAL_SECONDS = 10000, 2_000_000, 1.0

KEPT_FLOODING = "dropped: it kept sending after being told to slow down"
MUTED_REQUESTS = (Say, PrivateMessage, ChangeName)   # what a muted member may not do: put words on screens


@dataclass(frozen=True)
class Delivery:
    """Send ``message`` over the session of the member on connection ``to``."""
    to: Hashable
    message: Message


@dataclass(frozen=True)
class Broadcast:
    """Seal ``batch`` with the current room key and send it to the room."""
    batch: RoomBatch


@dataclass(frozen=True)
class NewRoomKey:
    """From now on, seal room datagrams with ``key``, announced as ``epoch``."""
    epoch: int
    key: bytes


@dataclass(frozen=True)
class StoreWrite:
    """Run ``write()`` in the server's writer thread, never on its loop: it writes the
    database, and may wait for another program's lock. Back on the loop, hand its
    future to ``Room.written(to, future)``."""
    to: Hashable
    write: Callable[[], frozenset[str]]


Instruction = Delivery | Broadcast | NewRoomKey | StoreWrite


def not_delivered(recipient: str) -> str:
    """The one reply for a DM that did not arrive. It never says why, so a
    sender cannot find out who ignores them."""
    return f"your message to {recipient} was not delivered"


@dataclass
class _Budget:
    """One member's allowances, and how often it was refused lately."""
    requests: TokenBucket
    repair_events: TokenBucket
    refused: int = 0
    window_started_at: float = 0.0
    last_notice_at: float = float("-inf")
    heard_at: float = 0.0                # its last request of any kind: the idle limit's clock


@dataclass(frozen=True)
class Batching:
    """When the events waiting in the outbox go out. Every datagram costs every
    receiver a signature check (about 60 us); every millisecond an event waits,
    every screen shows it later. So the rule looks at how busy the room is:

    * quiet: an event logged ``quiet_seconds`` or more after the last datagram
      goes at once, alone;
    * busy: events wait for company, and go out once ``full_events`` wait (a
      size trigger, but never sooner than ``spacing_seconds`` after the last
      datagram) or once the oldest has waited ``hold_seconds``.

    The size trigger sends a batch the moment it is worth a signature, where a
    fixed window would hold it until the window ends; the spacing makes a very
    busy room's batches bigger. A fixed window W is Batching(W, W, 1, W).
    """
    quiet_seconds: float
    spacing_seconds: float
    full_events: int
    hold_seconds: float

    def send_at(self, logged_at: Sequence[float], last_broadcast_at: float) -> float:
        """When events logged at ``logged_at`` (oldest first, at least one) go out."""
        first = logged_at[0]
        if first - last_broadcast_at >= self.quiet_seconds:
            return first
        due = first + self.hold_seconds
        if len(logged_at) >= self.full_events:
            full_at = max(logged_at[self.full_events - 1], last_broadcast_at + self.spacing_seconds)
            due = min(due, full_at)
        return due


# Chosen with bench/batching_model.py and bench/lab2_fanout.py against fixed windows and
# other rules (docs/performance.md, "Batching").
BATCHING = Batching(quiet_seconds=0.003, spacing_seconds=0.005, full_events=3, hold_seconds=0.015)


@dataclass
class _Outbox:
    """Logged events not yet broadcast, when each was logged, and where a leave cut them."""
    events: list[RoomEvent] = field(default_factory=list)
    logged_at: list[float] = field(default_factory=list)
    bytes: int = 0
    rekey_at: int | None = None          # events[:rekey_at] go out under the old key
    last_broadcast_at: float = float("-inf")


class Room:
    """Members, the numbered log, the room key, DMs, ignores and budgets."""

    def __init__(self, server_name: str, accounts: AccountStore, signing_public_key: bytes, *,
                 max_members: int = 250, max_members_per_source: int = 20,
                 max_messages_per_second: float = 20, multicast_group: str = "",
                 history_events: int = ROOM_HISTORY_EVENTS, history_bytes: int = ROOM_HISTORY_BYTES,
                 room_key_interval_seconds: float = ROOM_KEY_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.server_name = normalise_name(server_name)
        self.accounts = accounts
        self.signing_public_key = signing_public_key
        self.max_members = max_members
        self.max_members_per_source = max_members_per_source
        self._sources: dict[Hashable, str] = {}      # conn -> its address_key (IPv4, or IPv6 /64)
        self._repair_bytes: dict[str, TokenBucket] = {}   # IP address -> what its members' repairs may pull
        self._renames: dict[str, deque[float]] = {}  # IP address -> when its members last tried /nick
        self._server_names = {self.server_name}      # every name the server had: nobody else's
        self.max_messages_per_second = max_messages_per_second
        self.multicast_group = multicast_group   # "" when the room is broadcast
        self.clock = clock
        self._random_bytes = random_bytes
        self.log = RoomLog(self.server_name, history_events, history_bytes)
        self.members: dict[Hashable, str] = {}       # conn -> the name it is shown under
        self._accounts: dict[Hashable, str] = {}     # conn -> its account: ignores follow this
        self._shown_before: dict[Hashable, str] = {}  # conn -> the name it showed before its last rename
        self._budgets: dict[Hashable, _Budget] = {}
        self._writes_waiting: dict[Hashable, int] = {}   # conn -> its StoreWrites not yet written
        self._removed: dict[Hashable, str] = {}      # conn -> why the server removes it (its leave says so)
        self._muted: dict[str, float] = {}           # account -> until when it may not speak (clock)
        self.epoch, self.room_key = 1, random_bytes(ROOM_KEY_BYTES)
        self.room_key_interval_seconds = room_key_interval_seconds
        self._keyed_at = float("-inf")   # when the last new room key was made
        self._outbox = _Outbox()
        self._handlers = {
            Say: self._handle_say, PrivateMessage: self._handle_private_message,
            IgnoreUser: self._handle_ignore, UnignoreUser: self._handle_unignore,
            WhoRequest: self._handle_who, RepairRequest: self._handle_repair,
            ChangeName: self._handle_change_name,
        }

    @property
    def latest_seq(self) -> int:
        """The number of the newest logged event (0 before the first)."""
        return self.log.latest_seq

    def room_key_message(self) -> RoomKey:
        """What a member needs to open the room's datagrams from now on."""
        return RoomKey(self.epoch, self.room_key, self.signing_public_key)

    # --- joining and leaving ------------------------------------------------------

    @classmethod
    def from_settings(cls, server_name: str, accounts: AccountStore, signing_public_key: bytes, settings,
                      multicast_group: str = "") -> Room:
        """A room with the limits of a server's settings (common/config.py),
        multicast to ``multicast_group`` if one is given."""
        return cls(server_name, accounts, signing_public_key, max_members=settings.max_clients,
                   max_members_per_source=settings.max_clients_per_address,
                   max_messages_per_second=settings.max_messages_per_second, multicast_group=multicast_group,
                   history_events=settings.room_history_events, history_bytes=settings.room_history_bytes,
                   room_key_interval_seconds=settings.room_key_interval_ms / 1000)

    def join(self, conn: Hashable, name: str, source: str = "") -> list[Delivery]:
        """Admit ``name`` (already authenticated) on connection ``conn`` from
        the address ``source``.

        Returns, for the newcomer, in this order: LoginAccepted, the RoomGroup
        (only if the room is multicast), the RoomKey, its IgnoreList and the
        history so far; the numbered join event goes to the room. Or just a
        LoginRejected, if it may not join.
        """
        source = address_key(source)   # an IPv6 address counts as its /64
        if name in self._accounts.values() or name in self._server_names:
            return [Delivery(conn, LoginRejected(f"{name} is already in the room"))]
        squatter = _holder(self.members, name)
        if squatter is not None:   # a member took the name before its account existed: the owner gets it
            self._give_back(squatter)
        if len(self.members) >= self.max_members:
            return [Delivery(conn, LoginRejected("the room is full; try again later"))]
        if list(self._sources.values()).count(source) >= self.max_members_per_source:
            return [Delivery(conn, LoginRejected("too many members from your address; try again later"))]
        ignored = IgnoreList(tuple(sorted(self.accounts.ignored_by(name))))
        now = self.clock()
        self.members[conn] = self._accounts[conn] = name
        self._sources[conn] = source
        self._repair_bytes.setdefault(source, TokenBucket(MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS, now))
        self._writes_waiting[conn] = 0
        self._budgets[conn] = _Budget(TokenBucket(self.max_messages_per_second, now),
                                      TokenBucket(MAX_REPAIR_EVENTS_PER_SECOND, now), window_started_at=now,
                                      heard_at=now)
        group = [RoomGroup(self.multicast_group)] if self.multicast_group else []
        welcome = [LoginAccepted(name, self.server_name), *group, self.room_key_message(), ignored,
                   *self._history_after(conn, 0)]
        self._log(EventKind.JOIN, name, "")
        return [Delivery(conn, message) for message in welcome]

    def leave(self, conn: Hashable) -> None:
        """Forget ``conn``. If it was a member, the room sees it leave, and the
        next tick changes the room key."""
        self._budgets.pop(conn, None)
        self._writes_waiting.pop(conn, None)
        self._accounts.pop(conn, None)
        self._shown_before.pop(conn, None)
        removed_because = self._removed.pop(conn, None)
        source = self._sources.pop(conn, None)
        if source is not None and source not in self._sources.values():   # its address's last member
            self._repair_bytes.pop(source, None)
        name = self.members.pop(conn, None)
        if name is None:
            return
        if self._outbox.rekey_at is None:
            self._outbox.rekey_at = len(self._outbox.events)
        if removed_because is None:
            self._log(EventKind.LEAVE, name, "")
        else:   # the server's operator (or the idle limit) removed it: the room sees why
            self._log(EventKind.REMOVE, name, removed_because)

    # --- what members ask for -----------------------------------------------------

    def handle(self, conn: Hashable, message: Message) -> list[Delivery | StoreWrite]:
        """Apply one request from a joined member; returns what to deliver.

        Every request spends the member's budget. A broken rule (rate, empty
        text, a malformed name) is answered with an ErrorNotice to that member
        only. A message that has no business arriving here, or a member that
        keeps flooding, raises ProtocolError: the server drops that peer.
        """
        if conn not in self.members:
            raise ProtocolError("log in before anything else")
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(f"a client may not send {type(message).__name__}")
        budget, now = self._budgets[conn], self.clock()
        budget.heard_at = now   # whatever it asks, its program is alive
        if not budget.requests.take(now):
            return self._refuse(conn, budget, now)
        if isinstance(message, MUTED_REQUESTS) and self._accounts[conn] in self._muted:   # until its unmute event
            return self._refuse_muted(conn, now)
        try:
            return handler(conn, self._shown_name(conn), message)
        except ProtocolError as error:
            return [Delivery(conn, ErrorNotice(str(error)))]

    def written(self, conn: Hashable, outcome: Future) -> list[Delivery]:
        """A StoreWrite for ``conn`` is done: ``outcome.result()`` is the member's new
        ignore list, or raises why it was not saved. Returns the member's answer."""
        if conn not in self.members:
            return []   # it left while the write waited
        self._writes_waiting[conn] -= 1
        try:
            return [Delivery(conn, IgnoreList(tuple(sorted(outcome.result()))))]
        except ProtocolError as error:
            return [Delivery(conn, ErrorNotice(str(error)))]

    def server_says(self, text: str) -> None:
        """The server takes part in the room: its lines are numbered like anyone's."""
        self._log(EventKind.SAY, self.server_name, checked_text(text))

    def rename_server(self, new_name: str) -> None:
        """Change the server's name; the room sees a numbered rename event."""
        new_name = normalise_name(new_name)
        if new_name in self.members.values() or new_name in self._accounts.values():
            raise ProtocolError(f"{new_name} is taken by a member")
        if self.accounts.exists(new_name):   # its owner, logging in later, would be refused all run
            raise ProtocolError(f"{new_name} is an account's name")
        old_name, self.server_name = self.server_name, new_name
        self._server_names.add(new_name)
        self._log(EventKind.RENAME, old_name, new_name)

    # --- what goes out, and when --------------------------------------------------

    def tick(self, force: bool = False) -> list[Instruction]:
        """What to send now: call after every round of the loop and whenever
        ``wait_at_most()`` has passed. ``force`` sends everything logged at once."""
        now, outbox, out = self.clock(), self._outbox, []
        if outbox.rekey_at is not None and now >= self._keyed_at + self.room_key_interval_seconds:
            # Flush under the old key, then hand the new one to who is left.
            before, outbox.events = outbox.events[:outbox.rekey_at], outbox.events[outbox.rekey_at:]
            outbox.logged_at = outbox.logged_at[outbox.rekey_at:]
            outbox.bytes, outbox.rekey_at = sum(map(packed_bytes, outbox.events)), None
            out += [Broadcast(batch) for batch in self.batches(before)] if before else []
            self.epoch, self.room_key = self.epoch + 1, self._random_bytes(ROOM_KEY_BYTES)
            self._keyed_at = now
            out.append(NewRoomKey(self.epoch, self.room_key))
            out += [Delivery(conn, self.room_key_message()) for conn in self.members]
        if outbox.events and (force or outbox.bytes >= MAX_DATAGRAM_PLAINTEXT_BYTES
                              or now >= BATCHING.send_at(outbox.logged_at, outbox.last_broadcast_at)):
            out += [Broadcast(batch) for batch in self.batches(outbox.events)]
            outbox.events, outbox.logged_at, outbox.bytes = [], [], 0
            if outbox.rekey_at is not None:   # a re-key waits for its time: all so far went under the old key
                outbox.rekey_at = 0
        elif not outbox.events and now - outbox.last_broadcast_at >= HEARTBEAT_INTERVAL_SECONDS:
            out += [Broadcast(batch) for batch in self.batches([])]   # the heartbeat
        if any(isinstance(item, Broadcast) for item in out):
            outbox.last_broadcast_at = now
        return out

    def wait_at_most(self) -> float:
        """Seconds until ``tick()`` has something to send (0: now): the loop may
        sleep that long, no longer, or a waiting event would wait for the loop."""
        outbox = self._outbox
        if outbox.bytes >= MAX_DATAGRAM_PLAINTEXT_BYTES:
            return 0.0
        due = (BATCHING.send_at(outbox.logged_at, outbox.last_broadcast_at) if outbox.events
               else outbox.last_broadcast_at + HEARTBEAT_INTERVAL_SECONDS)
        if outbox.rekey_at is not None:   # a leave waits for the next new key
            due = min(due, self._keyed_at + self.room_key_interval_seconds)
        return max(0.0, due - self.clock())

    def batches(self, events: list[RoomEvent]) -> list[RoomBatch]:
        """Pack events into as few room datagrams as fit (a heartbeat if there
        are none): one seal and one signature then cover many events.

        Each batch announces its own last number, not the log's newest: a
        client that read the first of two batches must not think the second
        one's events were lost while that one is still on its way.
        """
        return [RoomBatch(chunk, chunk[-1].seq if chunk else self.latest_seq)
                for chunk in pack_events(events, MAX_DATAGRAM_PLAINTEXT_BYTES - BATCH_OVERHEAD_BYTES)]

    # --- the handlers -------------------------------------------------------------

    def _handle_say(self, conn: Hashable, name: str, message: Say) -> list[Delivery]:
        self._log(EventKind.SAY, name, checked_text(message.text))
        return []

    def _handle_private_message(self, conn: Hashable, name: str, message: PrivateMessage) -> list[Delivery]:
        # A client learns of its own rename from the room's event: until then it still
        # signs with the name it had, so the name before the last rename counts too.
        if message.sender not in (name, self._accounts[conn], self._shown_before.get(conn)):
            raise ProtocolError("a DM's sender must be your own name")
        text = checked_text(message.text)
        recipient = normalise_name(message.recipient)   # a malformed one is refused, not quoted back
        account = self._account_named(recipient)
        target = _holder(self._accounts, account)
        if target == conn:
            raise ProtocolError("you cannot send a DM to yourself")
        if target is None or self._accounts[conn] in self.accounts.ignored_by(self._accounts[target]):
            return [Delivery(conn, ErrorNotice(not_delivered(recipient)))]
        delivered = PrivateMessage(name, recipient, text)
        # Both ends see the DM: the sender's copy confirms it arrived.
        return [Delivery(target, delivered), Delivery(conn, delivered)]

    def _handle_ignore(self, conn: Hashable, name: str, message: IgnoreUser) -> list[StoreWrite]:
        return self._write(conn, partial(self.accounts.ignore, self._accounts[conn],
                                         self._account_named(message.name)))

    def _handle_unignore(self, conn: Hashable, name: str, message: UnignoreUser) -> list[StoreWrite]:
        return self._write(conn, partial(self.accounts.unignore, self._accounts[conn],
                                         self._account_named(message.name)))

    def _write(self, conn: Hashable, write: Callable[[], frozenset[str]]) -> list[StoreWrite]:
        """A change to save: the answer (the new IgnoreList) comes once it is written."""
        if self._writes_waiting[conn] >= MAX_WRITES_WAITING:   # a locked database: they would pile up
            raise ProtocolError("your earlier changes are still being saved; try again in a moment")
        self._writes_waiting[conn] += 1
        return [StoreWrite(conn, write)]

    def _handle_change_name(self, conn: Hashable, name: str, message: ChangeName) -> list[Delivery]:
        source = self._sources[conn]
        if source not in self._renames and len(self._renames) >= MAX_ADDRESSES_REMEMBERED:
            del self._renames[next(iter(self._renames))]   # bounded memory: forget the oldest address
        tried = self._renames.setdefault(source, deque(maxlen=MAX_RENAMES_PER_ADDRESS))
        now = self.clock()
        if len(tried) == MAX_RENAMES_PER_ADDRESS and tried[0] > now - RENAME_WINDOW_SECONDS:
            wait = math.ceil(tried[0] + RENAME_WINDOW_SECONDS - now)
            raise ProtocolError(f"too many name changes from your address; try again in {wait} s")
        tried.append(now)
        new_name = normalise_name(message.name)
        if new_name == name:
            raise ProtocolError(f"you are {name} already")
        # Not a name on screen now, nor another account's (in the room or not): nobody may pose
        # as someone else. An account made later takes its name back (join, _shown_name).
        own = self._accounts[conn]
        if (new_name in self.members.values() or new_name in self._server_names
                or (new_name != own and (new_name in self._accounts.values() or self.accounts.exists(new_name)))):
            raise ProtocolError(f"{new_name} is taken")
        self.members[conn], self._shown_before[conn] = new_name, name
        self._log(EventKind.RENAME, name, new_name)
        return []

    def _give_back(self, conn: Hashable) -> None:
        """The name ``conn`` shows is an account's now: show it under its own account again."""
        shown, own = self.members[conn], self._accounts[conn]
        self.members[conn], self._shown_before[conn] = own, shown
        self._log(EventKind.RECLAIM, shown, own)

    def _shown_name(self, conn: Hashable) -> str:
        """The name ``conn`` is shown under. One that became an account's after it was
        taken (registered in Lab 1, whose server shares the accounts) is given back
        first: nobody says anything under an account's name but that account."""
        shown = self.members[conn]
        if shown != self._accounts[conn] and self.accounts.exists(shown):
            self._give_back(conn)
        return self.members[conn]

    def _account_named(self, raw_name: str) -> str:
        """The account a name as a member typed it addresses: an account's own name
        first (in the room or not), else the account of the member shown under it,
        else the name itself. So a DM or an ignore of an account's name always
        reaches that account, never someone who showed that name before it existed."""
        name = normalise_name(raw_name)
        if name in self._accounts.values():
            return name
        holder = _holder(self.members, name)
        if holder is None:
            return name
        if self.accounts.exists(name):   # an account made while someone showed its name
            self._give_back(holder)
            return name
        return self._accounts[holder]

    def _handle_who(self, conn: Hashable, name: str, message: WhoRequest) -> list[Delivery]:
        return [Delivery(conn, MemberList((self.server_name, *sorted(self.members.values()))))]

    def _handle_repair(self, conn: Hashable, name: str, message: RepairRequest) -> list[Delivery]:
        return [Delivery(conn, history) for history in self._history_after(conn, message.after_seq)]

    def _history_after(self, conn: Hashable, seq: int) -> list[HistoryStart | History]:
        """Logged events after ``seq``: at most MAX_HISTORY_EVENTS, and no more
        than the member's repair allowance and its address's allowance of
        bytes, cut into History messages that each fit one record. Always at least one History, so the asker learns
        latest_seq, and with it whether to ask for more. If the log no longer
        keeps the events after ``seq``, a HistoryStart (within the same
        allowance of bytes) stands for them, and the kept ones follow.

        The caps bound the work one small request can cause: a late joiner of
        a long room, or a client asking again and again, gets the log in
        pieces, each only once it asks for it.
        """
        seq = min(seq, self.latest_seq)
        allowance, shared = self._budgets[conn].repair_events, self._repair_bytes[self._sources[conn]]
        now = self.clock()
        start, size, bytes_available = [], 0, shared.available(now)
        if seq < self.log.not_kept_seq:
            start = [self.log.start()]
            size = len(encode(start[0]))
            if size > bytes_available:   # all of it when the address's allowance refills
                return [History((), self.latest_seq)]
            seq = self.log.not_kept_seq
        count = int(min(MAX_HISTORY_EVENTS, self.latest_seq - seq, allowance.available(now)))
        events = []
        for event, event_bytes in itertools.islice(self.log.after(seq), count):
            if size + event_bytes > bytes_available:   # the rest when the address's allowance refills
                break
            events.append(event)
            size += event_bytes
        allowance.take(now, len(events))
        shared.take(now, size)
        return [*start, *(History(chunk, self.latest_seq) for chunk in pack_events(events, HISTORY_CHUNK_BYTES))]

    def _log(self, kind: EventKind, sender: str, text: str) -> None:
        event = RoomEvent(self.latest_seq + 1, kind, sender, text)
        event_bytes = packed_bytes(event)
        self.log.append(event, event_bytes)
        self._outbox.events.append(event)
        self._outbox.logged_at.append(self.clock())
        self._outbox.bytes += event_bytes

    def _refuse(self, conn: Hashable, budget: _Budget, now: float) -> list[Delivery]:
        """Over budget: say so, at most once a second; drop a member that keeps on."""
        if now - budget.window_started_at >= FLOOD_WINDOW_SECONDS:
            budget.refused, budget.window_started_at = 0, now
        budget.refused += 1
        if budget.refused > MAX_REFUSED_PER_WINDOW:
            raise ProtocolError(KEPT_FLOODING)
        if now - budget.last_notice_at < NOTICE_INTERVAL_SECONDS:
            return []
        budget.last_notice_at = now
        return [Delivery(conn, ErrorNotice(
            f"slow down: at most {self.max_messages_per_second:g} requests per second"))]

    # --- the server operator's controls (common/controls.py reads the commands) ----

    def member_named(self, name: str) -> Hashable:
        """The connection of the member shown as ``name``, else of the member
        whose account it is. Raises ProtocolError if there is none."""
        wanted = normalise_name(name)
        for names in (self.members, self._accounts):
            conn = _holder(names, wanted)
            if conn is not None:
                return conn
        raise ProtocolError(f"nobody in the room is called {wanted}")

    def source_of(self, conn: Hashable) -> str:
        """The address_key member ``conn`` joined from: its IPv4 address, or its IPv6 /64."""
        return self._sources[conn]

    def remove(self, conn: Hashable, reason: str) -> None:
        """The server is about to close member ``conn`` for ``reason`` (chat
        text): its leave shows as a numbered REMOVE event with that reason."""
        if conn in self.members:
            self._removed[conn] = checked_text(reason)

    def idle_members(self, now: float, max_idle_seconds: float) -> list[Hashable]:
        """The members that have sent nothing for ``max_idle_seconds``."""
        return [conn for conn in self.members if now - self._budgets[conn].heard_at >= max_idle_seconds]

    def mute(self, conn: Hashable, seconds: float, duration: str) -> None:
        """Refuse what member ``conn``'s account says, DMs or renames to for
        ``seconds`` (MUTED_REQUESTS), after it leaves and logs in again too;
        the room sees a numbered MUTE event that says ``duration``."""
        self._muted[self._accounts[conn]] = self.clock() + seconds
        self._log(EventKind.MUTE, self.members[conn], duration)

    def unmute(self, name: str) -> None:
        """Let the account behind ``name`` speak again; if it is in the room,
        the room sees a numbered UNMUTE event. Raises ProtocolError if it is
        not muted."""
        account = self._account_named(name)
        if self._muted.pop(account, None) is None:
            raise ProtocolError(f"{account} is not muted")
        conn = _holder(self._accounts, account)
        if conn is not None:
            self._log(EventKind.UNMUTE, self.members[conn], "")

    def end_mutes(self, now: float) -> None:
        """Unmute the accounts whose time is up. Until then they stay muted, so
        that no screen shows a muted member speak before the event that says it may."""
        for account in [a for a, until in self._muted.items() if until <= now]:
            self.unmute(account)

    def _refuse_muted(self, conn: Hashable, now: float) -> list[Delivery]:
        minutes = max(1, math.ceil((self._muted[self._accounts[conn]] - now) / 60))   # its unmute may be due
        return [Delivery(conn, ErrorNotice(
            f"you are muted for {minutes} more min: your messages, DMs and renames are refused"))]


def _holder(names: dict[Hashable, str], name: str) -> Hashable | None:
    """The connection that ``names`` (members' shown names, or their accounts) maps
    to ``name``, or None: a name is held by one connection at most."""
    return next((conn for conn, held in names.items() if held == name), None)


def packed_bytes(event: RoomEvent) -> int:
    """What ``event`` takes in a RoomBatch or a History: its encoding and 2 length bytes."""
    return len(encode(event)) + 2


def pack_events(events: list[RoomEvent], limit_bytes: int) -> list[tuple[RoomEvent, ...]]:
    """Cut ``events`` into runs whose packed_bytes add up to at most
    ``limit_bytes``. Always returns at least one run."""
    runs: list[list[RoomEvent]] = [[]]
    size = 0
    for event in events:
        event_bytes = packed_bytes(event)
        if runs[-1] and size + event_bytes > limit_bytes:
            runs.append([])
            size = 0
        runs[-1].append(event)
        size += event_bytes
    return [tuple(run) for run in runs]
