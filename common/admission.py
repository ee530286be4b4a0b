"""Who may hold a server's resources before proving who they are, without any I/O.

A connection costs the server a socket, a file descriptor and a little
memory before its peer has shown anything: that it knows the pre-shared key
(the handshake) or holds an account (the login). Someone without either
must not be able to use those up and lock the members out. Both labs'
servers let connections in through one ``Doorway``, with their own
``DoorwayLimits``; it ranks what a connection has proved:

1. a *stranger* has connected and not yet completed the handshake;
2. a *key holder* has completed it (its first record decrypted with the
   pre-shared key, and was no replay) but has not logged in yet;
3. a *login* waits for, or is in, a password check (``LoginQueue``);
4. a *member* has logged in, and is the server's own business.

Each rank competes only with its own: a stranger is never given the place
of a key holder, a login or a member, however many strangers come, so a
flood without the key cannot keep out anyone who has it. Within a rank:

* ``PendingConnections`` bounds a rank in all and per source address. When
  a source is at its cap, its *own* oldest connection makes room for its
  newest: a flood from one address evicts only itself. When the rank is
  full, the oldest connection of the address holding the most gives way.
* ``TokenBucket`` paces new connections per source address: a steady pace,
  a burst of a few. A connection that logs in (sends Login or Register,
  the first record that only a holder of the key can send) gives its token
  back, so honest clients behind one address never run it down; a source
  sending handshakes that fail, or replays, does, and is then refused at
  once, before any key exchange is spent on it.
* ``RecentHandshakes`` remembers the first handshake records that
  succeeded, for a day or the last 16,384 of them: a copy replayed by
  someone who sniffed it is refused before any Diffie-Hellman is done.
* ``ban`` refuses an address until the server stops: the server's
  operator typed ``/ban`` (common/controls.py). Nothing from it gets as far
  as a handshake.
* ``LoginQueue`` bounds the password checks waiting for a worker (each
  costs tens of milliseconds of CPU, on purpose), in all and per source,
  and hands the workers one check from each waiting source in turn.

A server counts a source by ``address_key``: an IPv4 address alone, but an
IPv6 address by its /64 network, since one host or one home network is given
a whole /64 and may speak from any address in it; the room's per-address
budgets (common/room.py), the accounts' (common/accounts.py) and the bans
use the same key. Behind a NAT, or in a demo on one machine, many honest
clients share one key: the caps leave them room.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import lru_cache, partial


class PendingConnections:
    """Connections of one rank (strangers, or key holders not logged in),
    oldest first, by source address, each with the time by which it must
    have moved on."""

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._sources: OrderedDict[Hashable, str] = OrderedDict()   # conn -> source, oldest first
        self._deadlines: dict[Hashable, float] = {}
        self._counts: dict[str, int] = {}                           # source -> its connections here

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, conn: Hashable) -> bool:
        return conn in self._sources

    def admit(self, conn: Hashable, source: str, deadline: float) -> list[Hashable]:
        """Count ``conn`` from ``source`` until ``deadline``; return the
        connections to close to make room for it: none; or the oldest of
        ``source`` itself when it is at its cap; or, when all are full, the
        oldest of the source that holds the most (the oldest of all on a tie)."""
        evicted = []
        if self._counts.get(source, 0) >= self.max_per_source:
            evicted.append(next(c for c, s in self._sources.items() if s == source))
        elif len(self._sources) >= self.max_total:
            most = max(self._counts.values())
            evicted.append(next(c for c, s in self._sources.items() if self._counts[s] == most))
        for old in evicted:
            self.forget(old)
        self._sources[conn], self._deadlines[conn] = source, deadline
        self._counts[source] = self._counts.get(source, 0) + 1
        return evicted

    def expired(self, now: float) -> list[Hashable]:
        """The connections whose deadline has passed."""
        return [conn for conn, deadline in self._deadlines.items() if deadline <= now]

    def forget(self, conn: Hashable) -> None:
        """``conn`` moved on or closed: it no longer counts."""
        source = self._sources.pop(conn, None)
        if source is None:
            return
        del self._deadlines[conn]
        self._counts[source] -= 1
        if not self._counts[source]:
            del self._counts[source]


class RecentHandshakes:
    """The initiator's ephemeral public keys (the first 32 bytes of handshake
    record 1, sent in clear) of the last ``max_remembered`` handshakes that
    succeeded, each for ``window_seconds``.

    NKpsk0's first record is all a client sends before the server answers,
    and nothing in it is bound to a time or to anything the server chose:
    its payload is empty and the prologue is a constant. A copy sniffed on
    the network would be accepted again for as long as the server keeps its
    key and the pre-shared key, making it do both key exchanges and answer
    someone who cannot read the answer. A client makes a fresh key pair for
    every connection, so a key seen twice is a replay, whenever it comes.
    The memory therefore lasts as long as it can: a day, or the last
    ``max_remembered`` handshakes (a class makes a few hundred an hour);
    when full, the oldest is forgotten rather than every newcomer refused,
    since anyone with the key could fill it on purpose.

    A copy older than that (or sniffed before the server restarted) still
    gets an answer, once: its key is remembered again. Its sender can send
    nothing after it, and the Doorway gives a connection its token back only
    for a login, which it cannot send, so each such replay spends its
    address's paced budget of new connections like any failed handshake.
    """

    def __init__(self, clock: Callable[[], float], window_seconds: float, max_remembered: int) -> None:
        self._clock = clock
        self.window_seconds = window_seconds
        self.max_remembered = max_remembered
        self._seen: OrderedDict[bytes, float] = OrderedDict()   # key -> when to forget it, oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def refusal(self, ephemeral_key: bytes) -> str | None:
        """Why a handshake whose first record starts with ``ephemeral_key``
        is refused before any work is done on it, or None to go on."""
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if ephemeral_key in self._seen:
            return "a replayed handshake: its first record was used before"
        return None

    def remember(self, ephemeral_key: bytes) -> None:
        """The handshake that began with ``ephemeral_key`` succeeded."""
        self._seen[ephemeral_key] = self._clock() + self.window_seconds
        self._seen.move_to_end(ephemeral_key)
        if len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)


class LoginQueue:
    """Password checks waiting for a worker, fair between source addresses.

    ``submit(call, on_done)`` hands a check to the workers (net.BackgroundWork
    does); at most ``workers`` run at once, and the queue hands them one
    check from each waiting source in turn: the source whose last check
    started longest ago goes first. Registrations take at most all workers
    but one (when there are two or more): from however many addresses new
    accounts are made, a member who already has one always finds a worker
    free for its login within one check's time.
    """

    def __init__(self, submit: Callable[[Callable, Callable], None], workers: int,
                 max_queued: int, max_queued_per_source: int,
                 on_evicted: Callable[[Hashable], None]) -> None:
        self._submit = submit
        self._on_evicted = on_evicted
        self.workers = workers
        self.max_queued = max_queued
        self.max_queued_per_source = max_queued_per_source
        self.running = 0
        self.registering = 0                        # of the running checks, how many are registrations
        self.max_registering = max(1, workers - 1)
        self._waiting: dict[str, deque] = {}        # source -> its jobs, oldest first
        self._turns = 0                             # checks started so far
        self._last_turn: dict[str, int] = {}        # source -> when it last had a check started

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._waiting.values())

    def add(self, source: str, owner: Hashable, call: Callable, on_done: Callable,
            registering: bool = False) -> bool:
        """Queue ``call`` for ``source``, on behalf of ``owner`` (a connection);
        ``on_done(future)`` runs when it is done; ``registering``: it may make
        a new account (a Register). Returns False if that source's
        share of the queue is full: refuse that login now rather than keep it
        waiting. When the whole queue is full, the source that has the most
        waiting gives way: its newest check is dropped and its owner passed to
        ``on_evicted``; if that source is this one, the new check is refused."""
        jobs = self._waiting.get(source)
        own = 0 if jobs is None else len(jobs)
        if own >= self.max_queued_per_source:
            return False
        if len(self) >= self.max_queued:
            busiest = max(self._waiting, key=lambda s: len(self._waiting[s]))
            if len(self._waiting[busiest]) <= own:
                return False
            evicted_owner, *_job = self._waiting[busiest].pop()
            if not self._waiting[busiest]:   # a source with nothing waiting is no source in the queue
                del self._waiting[busiest]
            self._on_evicted(evicted_owner)
        self._waiting.setdefault(source, deque()).append((owner, call, on_done, registering))
        self._start()
        return True

    def discard(self, owner: Hashable) -> None:
        """``owner``'s connection closed: drop its checks that have not started."""
        for source in list(self._waiting):
            self._waiting[source] = deque(job for job in self._waiting[source] if job[0] is not owner)
            if not self._waiting[source]:
                del self._waiting[source]

    def _start(self) -> None:
        while self.running < self.workers:
            # The source whose turn came longest ago (or never) goes next, of those
            # whose next check may start: a registration only while a worker is left for logins.
            ready = [s for s in self._waiting
                     if not self._waiting[s][0][3] or self.registering < self.max_registering]
            if not ready:
                return
            source = min(ready, key=lambda s: self._last_turn.get(s, -1))
            jobs = self._waiting[source]
            _owner, call, on_done, registering = jobs.popleft()
            if not jobs:
                del self._waiting[source]
            if len(self._last_turn) > 1000:   # bounded memory, whatever the sources
                self._last_turn = {s: t for s, t in self._last_turn.items() if s in self._waiting}
            self._turns += 1
            self._last_turn[source] = self._turns
            self.running += 1
            self.registering += registering
            self._submit(call, partial(self._finished, on_done, registering))

    def _finished(self, on_done: Callable, registering: bool, future) -> None:
        self.running -= 1
        self.registering -= registering
        self._start()
        on_done(future)


HANDSHAKE_TIMEOUT_SECONDS = 5   # a peer that cannot finish the handshake by then has no key
LOGIN_TIMEOUT_SECONDS = 10      # after the handshake, to send Login or Register
# New connections from one address: a steady pace, and a burst of as many. A
# connection that logs in (sends Login or Register) gives its token back.
NEW_CONNECTIONS_PER_SECOND_PER_ADDRESS, NEW_CONNECTIONS_BURST_PER_ADDRESS = 4, 16
# Handshakes remembered to refuse a replay of their first record: 32 bytes of key each
# (512 KiB; about 2.4 MB with Python's bookkeeping), each for a day at most.
MAX_REMEMBERED_HANDSHAKES, REPLAY_MEMORY_SECONDS = 16384, 24 * 60 * 60
MAX_ADDRESSES_PACED = 4096         # then the addresses whose budget is full again are forgotten
TOO_MANY_NEW_CONNECTIONS = (f"too many connections from there without a handshake: at most "
                            f"{NEW_CONNECTIONS_PER_SECOND_PER_ADDRESS} a second")
BUSY_WITH_LOGINS = "the server is busy with other logins; try again in a moment"
BANNED = "banned until the server stops"


@dataclass(frozen=True)
class DoorwayLimits:
    """How many connections of each rank a server holds before they log in."""
    strangers: int                  # still in the handshake, in all
    strangers_per_address: int
    key_holders: int                # handshake done, Login or Register not sent yet, in all
    key_holders_per_address: int
    queued_logins: int              # password checks waiting for a worker, in all
    queued_logins_per_address: int


LAB2_LIMITS = DoorwayLimits(strangers=128, strangers_per_address=8, key_holders=128, key_holders_per_address=32,
                            queued_logins=64, queued_logins_per_address=8)
# Lab 1 chats with one client at a time: the ranks are smaller.
LAB1_LIMITS = DoorwayLimits(strangers=32, strangers_per_address=8, key_holders=16, key_holders_per_address=8,
                            queued_logins=16, queued_logins_per_address=8)


class Doorway:
    """A connection's way in, the same in both labs: ``refusal`` paces new
    connections per address; ``arrive`` gives one a place among the
    strangers, ``handshake_done`` among the key holders, each with a
    deadline; ``check_password`` a place in the login queue. ``late(now)``
    lists who missed a deadline; ``leave(conn)`` frees what a closed
    connection held. ``handshakes`` is for the server's sessions: it refuses
    a replayed first record (session.SecureSession.server)."""

    def __init__(self, limits: DoorwayLimits, submit: Callable[[Callable, Callable], None], workers: int,
                 on_evicted: Callable[[Hashable], None], clock: Callable[[], float]) -> None:
        self.strangers = PendingConnections(limits.strangers, limits.strangers_per_address)
        self.key_holders = PendingConnections(limits.key_holders, limits.key_holders_per_address)
        self.logins = LoginQueue(submit, workers, limits.queued_logins, limits.queued_logins_per_address,
                                 on_evicted)
        self.handshakes = RecentHandshakes(clock, REPLAY_MEMORY_SECONDS, MAX_REMEMBERED_HANDSHAKES)
        self._clock = clock
        self._pace: dict[str, TokenBucket] = {}     # source -> its budget of new connections
        self._sources: dict[Hashable, str] = {}     # conn -> source, until its handshake is done
        self._banned: set[str] = set()              # addresses refused until the server stops

    def refusal(self, source: str, now: float) -> str | None:
        """Why a new connection from ``source`` is refused before any work is
        spent on it, or None to take it (it then spends one of its source's
        tokens, given back if it logs in)."""
        source = address_key(source)
        if source in self._banned:
            return BANNED
        bucket = self._pace.get(source)
        if bucket is None:
            if len(self._pace) >= MAX_ADDRESSES_PACED:   # bounded memory, whatever the sources:
                # a full budget is what a new address gets anyway; past that, the oldest half goes.
                self._pace = {s: b for s, b in self._pace.items() if b.available(now) < b.burst}
                if len(self._pace) >= MAX_ADDRESSES_PACED:
                    self._pace = dict(list(self._pace.items())[MAX_ADDRESSES_PACED // 2:])
            bucket = self._pace[source] = TokenBucket(NEW_CONNECTIONS_PER_SECOND_PER_ADDRESS, now,
                                                      burst=NEW_CONNECTIONS_BURST_PER_ADDRESS)
        if not bucket.take(now):
            return TOO_MANY_NEW_CONNECTIONS
        return None

    def arrive(self, conn: Hashable, source: str, now: float) -> list[Hashable]:
        """A new connection: returns the strangers to close to make room (see
        PendingConnections); never anyone who completed the handshake."""
        source = self._sources[conn] = address_key(source)
        evicted = self.strangers.admit(conn, source, now + HANDSHAKE_TIMEOUT_SECONDS)
        for old in evicted:
            self._sources.pop(old, None)
        return evicted

    def handshake_done(self, conn: Hashable, now: float) -> list[Hashable]:
        """``conn``'s first record opened with the key: it moves to the key
        holders, with the login deadline. Returns the key holders to close to
        make room (see PendingConnections); never a stranger's doing. Its
        token is not given back yet: a replayed first record older than
        RecentHandshakes' memory gets this far too, and only a login proves
        the sender holds the key."""
        source = self._sources.pop(conn)
        self.strangers.forget(conn)
        return self.key_holders.admit(conn, source, now + LOGIN_TIMEOUT_SECONDS)

    def check_password(self, conn: Hashable, source: str, call: Callable, on_done: Callable,
                       registering: bool = False) -> bool:
        """Queue the password check ``call`` (``registering``: of a Register);
        False if ``source`` has too many waiting. Once queued, the login queue
        bounds it, no longer a deadline. Either way ``conn`` sent a record
        under the session's keys, which no replayer can: its source's token
        of new connections is given back."""
        source = address_key(source)
        if source in self._pace:
            self._pace[source].give_back(self._clock())
        if not self.logins.add(source, conn, call, on_done, registering):
            return False
        self.key_holders.forget(conn)
        return True

    def late(self, now: float) -> list[Hashable]:
        """The connections that missed their deadline: strangers first."""
        return self.strangers.expired(now) + self.key_holders.expired(now)

    def ban(self, address: str) -> None:
        """Refuse every new connection from ``address`` (its address_key: an
        IPv6 address's whole /64) until the server stops."""
        self._banned.add(address_key(address))

    def is_banned(self, source: str) -> bool:
        return bool(self._banned) and address_key(source) in self._banned

    def leave(self, conn: Hashable) -> None:
        self._sources.pop(conn, None)
        self.strangers.forget(conn)
        self.key_holders.forget(conn)
        self.logins.discard(conn)


IPV6_PREFIX_BITS = 64   # an IPv6 source is counted by its network: what one host or home is given


@lru_cache(maxsize=4096)   # a key per connection, cheaply; bounded, since a source may be anyone
def address_key(source: str) -> str:
    """The one key a per-address limit counts ``source`` (an IP address as
    text) under: an IPv4 address itself; "::ffff:10.0.0.5" (how a server
    listening on IPv6 and IPv4 at once sees an IPv4 client) as "10.0.0.5";
    any other IPv6 address as its /64, "2001:db8:1:2::/64". A host given a
    /64 (as SLAAC and every ISP give one) can pick any of its 2**64
    addresses, so counting them one by one would give one student budgets
    without end. A key, or a source that is no IP address, stays as it is."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.is_link_local:   # every host of a LAN has one in fe80::/64: the address is the host
        return str(address)
    host_bits = 128 - IPV6_PREFIX_BITS
    return str(ipaddress.IPv6Network((int(address) >> host_bits << host_bits, IPV6_PREFIX_BITS)))


NOTES_PER_SECOND = 10   # notes about connections that are not members (both servers)


class NoteBudget:
    """Notes about connections (closed, refused, late), at most ``rate`` a
    second, in bursts of as many: a flood of connections must not become a
    flood of log lines. What is held back is counted and said in one line
    when ``tick()`` finds the budget has room again."""

    def __init__(self, say: Callable[[str], None], now: float, rate: float = NOTES_PER_SECOND) -> None:
        self._say = say
        self._bucket = TokenBucket(rate, now)
        self.held_back = 0

    def note(self, text: str, now: float) -> None:
        if self._bucket.take(now):
            self._say(text)
        else:
            self.held_back += 1

    def tick(self, now: float) -> None:
        if self.held_back and self._bucket.take(now):
            self._say(f"{self.held_back} more notes about connections held back "
                      f"(at most {self._bucket.rate:g} a second)")
            self.held_back = 0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up (one second's
    worth unless said): a steady pace is always allowed, a burst only up to
    ``burst``."""

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate, self.burst = rate, rate if burst is None else burst
        self.tokens, self.refreshed_at = self.burst, now

    def available(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.refreshed_at) * self.rate)
        self.refreshed_at = now
        return self.tokens

    def take(self, now: float, amount: float = 1) -> bool:
        """Spend ``amount`` tokens if there are that many; say whether we did."""
        if self.available(now) < amount:
            return False
        self.tokens -= amount
        return True

    def give_back(self, now: float, amount: float = 1) -> None:
        """Return ``amount`` tokens taken for something that turned out fine."""
        self.tokens = min(self.burst, self.available(now) + amount)
