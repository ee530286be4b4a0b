"""Who may hold a server's resources before proving who they are, without any I/O.

A connection costs the server a socket, a file descriptor and a little
memory before its peer has shown anything: that it knows the pre-shared key
(the handshake) or holds an account (the login). Someone without either
must not be able to use those up and lock the members out. So:

* ``PendingConnections`` bounds the connections that are not members yet,
  in all and per source address. When a source is at its cap, its *own*
  oldest pending connection makes room for its newest: a flood from one
  address evicts only itself, never a member and never another address.
* ``TokenBucket`` is the budget of one member, or one source: a steady pace
  is allowed, a burst only up to a second's worth.
* ``LoginQueue`` bounds the password checks waiting for a worker (each
  costs tens of milliseconds of CPU, on purpose), in all and per source,
  and hands the workers one check from each waiting source in turn: a
  flood of logins from one address delays another address's login only by
  the checks already running, and past its cap is refused at once.

``Doorway`` puts the two together, with Lab 2's numbers: all that a
server gives a connection between its arrival and its first room message.

A server counts a source by IP address. Behind a NAT, or in a demo on one
machine, many honest clients share one address: the caps leave them room.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from functools import partial


class PendingConnections:
    """Connections that have not logged in yet, oldest first, by source
    address, each with the time by which it must have moved on."""

    def __init__(self, max_total: int, max_per_source: int) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self._sources: OrderedDict[Hashable, str] = OrderedDict()   # conn -> source, oldest first
        self._deadlines: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._sources)

    def __contains__(self, conn: Hashable) -> bool:
        return conn in self._sources

    def admit(self, conn: Hashable, source: str, deadline: float) -> list[Hashable]:
        """Count ``conn`` from ``source`` as pending until ``deadline``; return
        the connections to close to make room for it (none, or the oldest one
        of the source that holds the most, which is ``source`` itself when it
        is at its cap)."""
        evicted = []
        same_source = [c for c, s in self._sources.items() if s == source]
        if len(same_source) >= self.max_per_source:
            evicted.append(same_source[0])
        elif len(self._sources) >= self.max_total:
            counts: dict[str, int] = {}
            for s in self._sources.values():
                counts[s] = counts.get(s, 0) + 1
            busiest = max(counts, key=counts.get)
            evicted.append(next(c for c, s in self._sources.items() if s == busiest))
        for old in evicted:
            self.forget(old)
        self._sources[conn], self._deadlines[conn] = source, deadline
        return evicted

    def extend(self, conn: Hashable, deadline: float) -> None:
        """``conn`` reached its next step (the handshake is done): a new deadline."""
        if conn in self._deadlines:
            self._deadlines[conn] = deadline

    def expired(self, now: float) -> list[Hashable]:
        """The pending connections whose deadline has passed."""
        return [conn for conn, deadline in self._deadlines.items() if deadline <= now]

    def forget(self, conn: Hashable) -> None:
        """``conn`` logged in or closed: it no longer counts."""
        self._sources.pop(conn, None)
        self._deadlines.pop(conn, None)


class LoginQueue:
    """Password checks waiting for a worker, fair between source addresses.

    ``submit(call, on_done)`` hands a check to the workers (net.BackgroundWork
    does); at most ``workers`` run at once, and the queue hands them one
    check from each waiting source in turn: the source whose last check
    started longest ago goes first.
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
        self._waiting: dict[str, deque] = {}        # source -> its jobs, oldest first
        self._turns = 0                             # checks started so far
        self._last_turn: dict[str, int] = {}        # source -> when it last had a check started

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._waiting.values())

    def add(self, source: str, owner: Hashable, call: Callable, on_done: Callable) -> bool:
        """Queue ``call`` for ``source``, on behalf of ``owner`` (a connection);
        ``on_done(future)`` runs when it is done. Returns False if that source's
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
            evicted_owner, _call, _on_done = self._waiting[busiest].pop()
            self._on_evicted(evicted_owner)
        self._waiting.setdefault(source, deque()).append((owner, call, on_done))
        self._start()
        return True

    def discard(self, owner: Hashable) -> None:
        """``owner``'s connection closed: drop its checks that have not started."""
        for source in list(self._waiting):
            self._waiting[source] = deque(job for job in self._waiting[source] if job[0] is not owner)
            if not self._waiting[source]:
                del self._waiting[source]

    def _start(self) -> None:
        while self._waiting and self.running < self.workers:
            # The source whose turn came longest ago (or never) goes next.
            source = min(self._waiting, key=lambda s: self._last_turn.get(s, -1))
            jobs = self._waiting[source]
            _owner, call, on_done = jobs.popleft()
            if not jobs:
                del self._waiting[source]
            if len(self._last_turn) > 1000:   # bounded memory, whatever the sources
                self._last_turn = {s: t for s, t in self._last_turn.items() if s in self._waiting}
            self._turns += 1
            self._last_turn[source] = self._turns
            self.running += 1
            self._submit(call, partial(self._finished, on_done))

    def _finished(self, on_done: Callable, future) -> None:
        self.running -= 1
        self._start()
        on_done(future)


HANDSHAKE_TIMEOUT_SECONDS = 5   # a peer that cannot finish the handshake by then has no key
LOGIN_TIMEOUT_SECONDS = 10      # after the handshake, to send Login or Register
MAX_PENDING_CONNECTIONS, MAX_PENDING_PER_ADDRESS = 128, 32   # not logged in yet
MAX_QUEUED_LOGINS, MAX_QUEUED_LOGINS_PER_ADDRESS = 64, 8
BUSY_WITH_LOGINS = "the server is busy with other logins; try again in a moment"


class Doorway:
    """A connection's way in: a place among the pending connections with a
    deadline for each step (handshake, then login), then a place in the
    login queue. ``late(now)`` lists who missed a deadline; ``leave(conn)``
    frees what a closed connection held."""

    def __init__(self, submit: Callable[[Callable, Callable], None], workers: int,
                 on_evicted: Callable[[Hashable], None]) -> None:
        self.pending = PendingConnections(MAX_PENDING_CONNECTIONS, MAX_PENDING_PER_ADDRESS)
        self.logins = LoginQueue(submit, workers, MAX_QUEUED_LOGINS, MAX_QUEUED_LOGINS_PER_ADDRESS, on_evicted)

    def arrive(self, conn: Hashable, source: str, now: float) -> list[Hashable]:
        """A new connection: returns the older ones to close to make room (see PendingConnections)."""
        return self.pending.admit(conn, source, now + HANDSHAKE_TIMEOUT_SECONDS)

    def handshake_done(self, conn: Hashable, now: float) -> None:
        self.pending.extend(conn, now + LOGIN_TIMEOUT_SECONDS)

    def check_password(self, conn: Hashable, source: str, call: Callable, on_done: Callable) -> bool:
        """Queue the password check ``call``; False if ``source`` has too many
        waiting. Once queued, the login queue bounds it, no longer a deadline."""
        if not self.logins.add(source, conn, call, on_done):
            return False
        self.pending.forget(conn)
        return True

    def late(self, now: float) -> list[Hashable]:
        return self.pending.expired(now)

    def leave(self, conn: Hashable) -> None:
        self.pending.forget(conn)
        self.logins.discard(conn)


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
    """``rate`` tokens a second, at most ``rate`` saved up: a steady pace is
    always allowed, a burst only up to one second's worth."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.tokens, self.refreshed_at = rate, rate, now

    def available(self, now: float) -> float:
        self.tokens = min(self.rate, self.tokens + (now - self.refreshed_at) * self.rate)
        self.refreshed_at = now
        return self.tokens

    def take(self, now: float, amount: float = 1) -> bool:
        """Spend ``amount`` tokens if there are that many; say whether we did."""
        if self.available(now) < amount:
            return False
        self.tokens -= amount
        return True
