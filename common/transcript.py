"""A client's copy of the room log: in order, without gaps or duplicates.

UDP may lose, duplicate or reorder datagrams. The server numbers every room
event, so a client can put them right by itself:

* an event numbered ``next_seq`` is delivered at once, followed by any
  waiting events that now follow on;
* an older number is a duplicate and is dropped;
* a newer number waits in ``_early`` and reveals a gap;
* every datagram (heartbeats included) carries the newest number the server
  has logged, so even a lost *last* message shows up as a gap.

A gap is repaired over the reliable TCP session: ``repair_due()`` says when
to ask the server for everything after ``delivered_seq``. It waits a short
grace period first (a reordered datagram often fills the gap by itself), and
asks again only if the answer has not come in a while.

A member that hears no datagram at all for DEAF_AFTER_SECONDS (broadcast
blocked by Wi-Fi client isolation or a firewall, a wrong BROADCAST_ADDR) is
"deaf": ``repair_due()`` then asks the server every REPAIR_RETRY_SECONDS
for whatever it has, so the room goes on over TCP alone, only slower. A
member that misses nothing asks anyway, once every KEEPALIVE_SECONDS: the
server removes a member it has heard nothing from for a long time (a program
that hung, a laptop asleep), and one who only reads must not look like that.

A running hash over every delivered event lets screens and tests prove
that two transcripts are equal by comparing a few hex digits. It is a chain
(each step hashes the step before and the next event, ``chain_hash``), so
it fits in 32 bytes that can be handed over: the server keeps only the
newest part of the log, and someone who joins late starts from the hash of
what is no longer kept (``Transcript.start_at``), and ends up with the same
hash as a member who saw it all.

``EarlyDatagrams`` holds, briefly, the datagrams sealed with a room key that
is still on its way over TCP: after a leave the server hands every member the
new key, then seals with it, and a datagram may overtake the key. Dropped, it
would come back only by a repair after the next heartbeat; held, it is opened
the moment the key arrives. At most MAX_EARLY_DATAGRAMS, for at most
MAX_EARLY_DATAGRAM_SECONDS, and only of the next epoch: a stranger can fill
the hold with garbage, but never make it grow.

``DatagramGate`` decides which datagrams are worth opening at all. Checking
a signature costs about 100 us, so a member who floods forgeries could keep
every receiver busy. Only datagrams from the server's IP address (the one
our TCP session reached; over loopback, any of this machine's own) are
opened; the source port of the last genuine one is trusted without limit,
every other source may fail only a few times a second. A stranger who replays a genuine datagram from another port wins
nothing: the server's next one, from its own port, takes the trust back.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from common import wire
from common.admission import TokenBucket
from common.errors import ProtocolError
from common.framing import DatagramOpener, KeyNotYetHere
from common.messages import EventKind, HistoryStart, PrivateMessage, RoomBatch, RoomEvent, decode, encode

REPAIR_GRACE_SECONDS = 0.03   # a reordered datagram usually fills a gap by then
REPAIR_RETRY_SECONDS = 0.25   # ask again if a repair has not arrived by then
# Heartbeats come 4 times a second: 6 lost in a row is deafness, not a lossy network
# (at 20% loss, 6 in a row happens about once in 4 hours of heartbeats).
DEAF_AFTER_SECONDS = 1.5
KEEPALIVE_SECONDS = 60.0      # the longest a member stays silent on its TCP session
MAX_EARLY_EVENTS = 10000      # a bound on what waits for a gap to fill
UNPROVEN_OPENS_PER_SECOND = 10   # datagrams opened from all sources but the proven one, together
MAX_EARLY_DATAGRAMS = 16         # held for a room key still on its way: the newest ones ...
MAX_EARLY_DATAGRAM_SECONDS = 0.5  # ... for this long (a key comes over TCP within milliseconds)
EMPTY_HASH = bytes(32)           # the running hash before the first event


def chain_hash(previous: bytes, event: RoomEvent) -> bytes:
    """The running hash after ``event``: SHA-256 of the hash before it and the
    event's encoding. Everyone who applies the same events, in order, to the
    same start gets the same 32 bytes."""
    return hashlib.sha256(previous + encode(event)).digest()


def read_room_datagram(opener: DatagramOpener, datagram: bytes) -> RoomBatch:
    """Check, decrypt and decode one room datagram. Raises ProtocolError if
    it is not an authentic, fresh RoomBatch from the server."""
    try:
        batch = decode(opener.open(datagram))
        if not isinstance(batch, RoomBatch):
            raise ProtocolError(f"a room datagram holds a RoomBatch, not a {type(batch).__name__}")
    except ProtocolError as error:
        if wire.tap is not None:   # the wire view is on (common/wire.py): say why it was dropped
            wire.tap.datagram_refused(datagram, _refusal(opener, datagram, error))
        raise
    if wire.tap is not None:
        wire.tap.datagram_opened(datagram, batch)
    return batch


def _refusal(opener: DatagramOpener, datagram: bytes, error: ProtocolError) -> str:
    """The wire view's mark for a refused datagram: a packet number the
    replay window has seen is a copy (a duplicate); anything else failed a check."""
    if isinstance(error, KeyNotYetHere):
        return f"held: {error}"
    number = wire.packet_number(datagram)
    if number is not None and not opener.window.is_fresh(number):
        return f"duplicate: {error}"
    return f"rejected: {error}"


# The line of each kind of event, as docs/protocol.md §5 lists them.
EVENT_LINES: dict[EventKind, str] = {
    EventKind.SAY: "#{seq} {sender}: {text}",
    EventKind.JOIN: "#{seq} * {sender} joined",
    EventKind.LEAVE: "#{seq} * {sender} left",
    EventKind.RENAME: "#{seq} * {sender} is now {text}",
    # The room learns who showed that name, and why it may no longer.
    EventKind.RECLAIM: "#{seq} * {sender} is {text} again: {sender} is an account's name",
    EventKind.REMOVE: "#{seq} * {sender} was removed: {text}",
    EventKind.MUTE: "#{seq} * {sender} is muted for {text}",
    EventKind.UNMUTE: "#{seq} * {sender} may speak again",
    EventKind.NOT_KEPT: "#{seq} * {seq} earlier messages not kept",
}


def format_event(event: RoomEvent) -> str:
    """The one line every screen shows for a room event, byte for byte."""
    if event.kind is EventKind.NOT_KEPT and event.seq == 1:
        return "#1 * 1 earlier message not kept"
    # format() fills the fields in once: braces in a name or a text stay as they are.
    return EVENT_LINES[event.kind].format(seq=event.seq, sender=event.sender, text=event.text)


def format_hidden_run(first: int, last: int) -> str:
    """The one line for hidden messages ``first`` to ``last``, in a row: a
    spammer you ignore costs your screen one line, not one per message, and
    the numbers stay, so your transcript still lines up with everyone else's."""
    if first == last:
        return f"~#{first} (hidden: a message from someone you ignore)"
    return f"~#{first}-#{last} ({last - first + 1} hidden messages from people you ignore)"


class HiddenRun:
    """The run of hidden messages a screen showed last: numbers in a row, with
    nothing else shown between them. A screen shows it as one line
    (``line()``) that it updates as the run grows."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.last: int | None = None

    def continues(self, seq: int) -> bool:
        """Whether hidden message ``seq`` would extend this run (the next number)."""
        return self.last is not None and seq == self.last + 1

    def add(self, seq: int) -> None:
        """Hidden message ``seq`` is shown: it extends the run, or starts a new one."""
        if not self.continues(seq):
            self.first = seq
        self.last = seq

    def end(self) -> None:
        """Something else was shown: the next hidden message starts a new run."""
        self.first = self.last = None

    def line(self) -> str:
        """The run's line: "~#12-#19 (8 hidden messages from people you ignore)"."""
        return format_hidden_run(self.first, self.last)


def show_events(screen, roster: Roster, events: Iterable[RoomEvent], ignored: frozenset[str] = frozenset()) -> bool:
    """Show room events on ``screen`` (a front end from common/ui.py) in order,
    following them in ``roster``; a SAY from an ignored account shows as its
    placeholder (an ignore is of an account: a member who renames stays
    hidden), and the screen collapses placeholders in a row into one line
    (``show_hidden``). True if anything but a message came (a join, a leave, a
    rename, a name given back, a removal, a mute): the member list may have changed."""
    changed = False
    for event in events:
        if event.kind is EventKind.SAY and roster.account_of(event.sender) in ignored:
            screen.show_hidden(event.seq, event.sender)
        else:
            screen.show_text(format_event(event), event.sender)
        roster.apply(event)
        changed = changed or event.kind is not EventKind.SAY
    return changed


def start_history(screen, transcript: Transcript, roster: Roster, start: HistoryStart) -> Roster:
    """We lack events the server no longer keeps: unless we are past them
    already, go on from where its log starts (``transcript.start_at``), show
    the summary line and the members of that moment, and return their roster;
    else ``roster``."""
    if not transcript.start_at(start.summary.seq, start.running_hash):
        return roster
    screen.show_text(format_event(start.summary), start.summary.sender)
    roster = Roster.at(start.summary.sender, start.members)
    screen.set_members(roster.names())
    return roster


def format_private(message: PrivateMessage) -> str:
    """A DM line: it starts with "@", so it is never mistaken for a room line."""
    return f"@{message.sender} -> {message.recipient}: {message.text}"


class Roster:
    """Who is in the room, followed from the room's own numbered events, so
    every screen (the server's too) lists the same names.

    It also knows the account behind each shown name: a member who renames
    stays the same account, so an ignore follows it (``account_of``). Fed
    the log from #1, or from a HistoryStart (``Roster.at``: who was in the
    room where the server's log starts), it ends where everyone else's is;
    the server is the one who never joins, so a rename of someone who is not
    a member is the server's.
    """

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self._accounts: dict[str, str] = {}   # shown name -> account name

    @classmethod
    def at(cls, server_name: str, members: Iterable[str]) -> Roster:
        """The roster that ``members()`` described (a HistoryStart's members)."""
        roster = cls(server_name)
        for entry in members:
            shown, _, account = entry.partition(" ")
            roster._accounts[shown] = account or shown
        return roster

    def members(self, limit_bytes: int) -> tuple[str, ...]:
        """Each member as its shown name, or "shown account" if it shows another
        name than its account's, in at most ``limit_bytes`` of encoding (each
        name a u16 length and its letters): past that, a renamed member's
        account is left out (a room of hundreds, all renamed, and no more)."""
        members = sorted(self._accounts.items())
        size = sum(len(shown) + 2 for shown, _account in members)   # names are ASCII: a letter is a byte
        entries = []
        for shown, account in members:
            if shown != account and size + 1 + len(account) <= limit_bytes:
                entries.append(f"{shown} {account}")
                size += 1 + len(account)
            else:
                entries.append(shown)
        return tuple(entries)

    def apply(self, event: RoomEvent) -> None:
        """Follow one event; a SAY, a NOT_KEPT, a MUTE or an UNMUTE changes nothing."""
        if event.kind is EventKind.JOIN:   # at login, the shown name is the account name
            self._accounts[event.sender] = event.sender
        elif event.kind in (EventKind.LEAVE, EventKind.REMOVE):
            self._accounts.pop(event.sender, None)
        elif event.kind in (EventKind.RENAME, EventKind.RECLAIM) and event.sender in self._accounts:
            self._accounts[event.text] = self._accounts.pop(event.sender)
        elif event.kind is EventKind.RENAME:
            self.server_name = event.text

    def account_of(self, shown_name: str) -> str:
        """The account behind a shown name (the name itself if not a member)."""
        return self._accounts.get(shown_name, shown_name)

    def name_of(self, account: str) -> str:
        """The name ``account`` is shown under now (its own name if not a member)."""
        return next((shown for shown, owner in self._accounts.items() if owner == account), account)

    def names(self) -> list[str]:
        """The server first, then the members in alphabetical order."""
        return [self.server_name, *sorted(self._accounts)]


class Transcript:
    """Delivers room events in sequence order and notices what is missing."""

    def __init__(self) -> None:
        self.delivered_seq = 0          # every event up to this number is delivered
        self.latest_known_seq = 0       # the newest number the server has told us of
        self._early: dict[int, RoomEvent] = {}
        self.running_hash = EMPTY_HASH
        self._gap_since: float | None = None
        self._wait_seconds = REPAIR_GRACE_SECONDS
        self.heard_at: float | None = None   # when the last datagram arrived (or we started listening)
        self._asked_at = float("-inf")
        self._keepalive_at: float | None = None   # when to ask even if nothing is missing

    def receive(self, events: Iterable[RoomEvent], latest_seq: int = 0) -> list[RoomEvent]:
        """Take events in any order, with duplicates, and the server's newest
        number; return the events that can now be shown, in order."""
        tap = wire.tap
        if tap is not None:   # the wire view is on: which of these we had already
            events = tuple(events)   # the same tuple, if it was one: the tap knows it by that
            duplicates = [event.seq for event in events
                          if event.seq <= self.delivered_seq or event.seq in self._early]
        self.latest_known_seq = max(self.latest_known_seq, latest_seq)
        for event in events:
            self.latest_known_seq = max(self.latest_known_seq, event.seq)
            if self.delivered_seq < event.seq and len(self._early) < MAX_EARLY_EVENTS:
                self._early.setdefault(event.seq, event)
        ready = []
        while self.delivered_seq + 1 in self._early:
            event = self._early.pop(self.delivered_seq + 1)
            self.running_hash = chain_hash(self.running_hash, event)
            self.delivered_seq = event.seq
            ready.append(event)
        if ready:   # progress: a gap that remains gets a fresh grace period
            self._gap_since, self._wait_seconds = None, REPAIR_GRACE_SECONDS
        if tap is not None:
            tap.delivered(events, duplicates, self.first_gap())
        return ready

    def start_at(self, seq: int, running_hash: bytes) -> bool:
        """The server keeps no events up to ``seq``, and ``running_hash`` is the
        hash after them: go on from there (the early events it covers are
        dropped; the next receive() delivers those that follow on). False, and
        nothing changes, if we have delivered that far already."""
        if seq <= self.delivered_seq:
            return False
        self.delivered_seq, self.running_hash = seq, running_hash
        self.latest_known_seq = max(self.latest_known_seq, seq)
        self._early = {number: event for number, event in self._early.items() if number > seq}
        return True

    def first_gap(self) -> tuple[int, int] | None:
        """The first run of numbers the server has logged and we lack, as
        (first, last); None if we lack nothing."""
        if not self.has_gap:
            return None
        first = self.delivered_seq + 1
        return first, (min(self._early) - 1 if self._early else self.latest_known_seq)

    @property
    def has_gap(self) -> bool:
        """True if the server has logged events that we have not delivered."""
        return self.latest_known_seq > self.delivered_seq

    def heard(self, now: float) -> None:
        """A genuine datagram arrived (or, at login, we started listening)."""
        self.heard_at = now

    def is_deaf(self, now: float) -> bool:
        """True if no datagram has arrived for DEAF_AFTER_SECONDS since we
        started listening: the room must come over TCP."""
        return self.heard_at is not None and now - self.heard_at >= DEAF_AFTER_SECONDS

    def repair_due(self, now: float) -> int | None:
        """If a repair request should go out now, return the ``after_seq`` to
        ask for (and remember that we asked); otherwise None.

        A member that misses nothing still asks once every KEEPALIVE_SECONDS
        (the answer is an empty History): the server removes members it hears
        nothing from for a long time (its MAX_IDLE_SECONDS), and a student who
        only reads must not look like a program that hung."""
        if self._keepalive_at is None:   # the first call, at login: the clock starts now
            self._keepalive_at = now + KEEPALIVE_SECONDS
        after_seq = self._missing(now)
        if after_seq is None and now >= self._keepalive_at:
            after_seq = self.delivered_seq
        if after_seq is not None:
            self._keepalive_at = now + KEEPALIVE_SECONDS
        return after_seq

    def _missing(self, now: float) -> int | None:
        if self.is_deaf(now):   # we would not notice a gap: ask for what there is
            if now - self._asked_at < REPAIR_RETRY_SECONDS:
                return None
            self._asked_at = now
            return self.delivered_seq
        if not self.has_gap:
            self._gap_since = None
            return None
        if self._gap_since is None:
            self._gap_since = now
        if now - self._gap_since < self._wait_seconds:
            return None
        self._gap_since, self._wait_seconds = now, REPAIR_RETRY_SECONDS
        return self.delivered_seq

    def digest(self) -> str:
        """A short fingerprint of everything delivered so far (12 hex digits)."""
        return self.running_hash.hex()[:12]

    def summary(self) -> str:
        """'transcript HASH COUNT': what /hash shows and what a clean exit prints last."""
        return f"transcript {self.digest()} {self.delivered_seq}"


class EarlyDatagrams:
    """Datagrams that came before their room key (KeyNotYetHere), held until it comes."""

    def __init__(self) -> None:
        self._held: deque[tuple[bytes, tuple, float]] = deque(maxlen=MAX_EARLY_DATAGRAMS)   # the oldest go first

    def hold(self, datagram: bytes, source: tuple, now: float) -> None:
        """Keep ``datagram`` (from ``source``, at ``now``) until the next room key."""
        self._held.append((datagram, source, now))

    def release(self, now: float) -> list[tuple[bytes, tuple]]:
        """A room key has arrived: return the (datagram, source) pairs held for at most
        MAX_EARLY_DATAGRAM_SECONDS, oldest first, to be opened now; forget them all."""
        released = [(datagram, source) for datagram, source, held_at in self._held
                    if now - held_at <= MAX_EARLY_DATAGRAM_SECONDS]
        self._held.clear()
        return released


class DatagramGate:
    """Which room datagrams are worth the cost of opening, and how many were."""

    def __init__(self, is_own_address: Callable[[str], bool] = lambda _address: False) -> None:
        """``is_own_address(ip)``: whether an address is this machine's own
        (net.is_own_address); a server reached over loopback may send from any."""
        self.server_host: str | None = None       # the server's IP address, once connected
        self._is_own_address = is_own_address
        self.server_source: tuple | None = None   # (address, port) of the last genuine datagram
        self._unproven: TokenBucket | None = None   # one budget for every other source
        self.counts = {"opened": 0, "rejected": 0, "ignored": 0}

    def choose(self, received: list[tuple[bytes, tuple]], now: float) -> Iterator[tuple[bytes, tuple]]:
        """Of the datagrams read in one turn, yield those worth opening: the
        ones from the server's proven source first, then each other one that
        ``worth_opening`` lets through when its turn comes (open each before
        asking for the next: a failed one spends the budget of the rest). A
        flood from other ports then costs a glance per datagram, and never
        delays the server's own."""
        yield from ((datagram, source) for datagram, source in received if source == self.server_source)
        for datagram, source in received:
            if source != self.server_source and self.worth_opening(source, now):
                yield datagram, source

    def worth_opening(self, source: tuple, now: float) -> bool:
        """Whether to open a datagram from ``source``: yes from the server's
        source; from other ports of the server's host within one shared
        budget (a budget per port would let a sender that changes its port
        each time have them all); never from another host."""
        if source == self.server_source:
            return True
        refusal = None   # why it is not worth opening; the cheap checks first, a flood meets them all
        if self._unproven is None:
            self._unproven = TokenBucket(UNPROVEN_OPENS_PER_SECOND, now)
        if self._unproven.available(now) < 1:
            refusal = "other sources failed too often this second"
        elif self.server_host is not None and not self._from_server_host(source[0]):
            refusal = "not from the server's host"
        if refusal is not None:
            self.counts["ignored"] += 1
            if wire.tap is not None:   # the wire view is on (common/wire.py)
                wire.tap.datagram_ignored(source, refusal)
        return refusal is None

    def _from_server_host(self, address: str) -> bool:
        # On macOS, multicast on loopback may come from another address of this machine.
        return _same_host(address, self.server_host) or (
            _is_loopback(self.server_host) and self._is_own_address(address))

    def opened(self, source: tuple) -> None:
        """A datagram from ``source`` proved genuine: it is the server's source."""
        self.counts["opened"] += 1
        self.server_source = source
        if wire.tap is not None:   # the wire view is on: it learns where the datagram came from
            wire.tap.datagram_from(source)

    def rejected(self, source: tuple, now: float) -> None:
        """A datagram from ``source`` failed a check: unless it came from the
        server's source, it spends the other sources' budget."""
        self.counts["rejected"] += 1
        if source != self.server_source and self._unproven is not None:
            self._unproven.take(now)
        if wire.tap is not None:
            wire.tap.datagram_from(source)

    def summary(self) -> str:
        """'datagrams: N opened, N rejected, N ignored unopened'."""
        return (f"datagrams: {self.counts['opened']} opened, {self.counts['rejected']} rejected, "
                f"{self.counts['ignored']} ignored unopened")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _same_host(address: str, other: str) -> bool:
    """Whether two IP addresses name one host: equal, or both loopback (a
    client that reached the server at ::1 hears it from 127.0.0.1)."""
    try:
        first, second = ipaddress.ip_address(address), ipaddress.ip_address(other)
    except ValueError:
        return address == other
    first = getattr(first, "ipv4_mapped", None) or first
    second = getattr(second, "ipv4_mapped", None) or second
    return first == second or (first.is_loopback and second.is_loopback)
