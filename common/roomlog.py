"""The room's log, bounded: its newest events, and what stands for the rest.

A class meets for hours, and every member may talk up to its budget: a log
that kept everything would grow all afternoon, and a late joiner would
download all of it. So the server keeps a window: the newest ``max_events``
events, in at most ``max_bytes`` of encodings. An event that falls out of
the window is gone, and three small things stand for all of those:

* the number of the last one (``not_kept_seq``): someone who lacks them is
  shown one numbered NOT_KEPT event instead, "#N * N earlier messages not
  kept", the same line on every screen that shows it;
* the transcript's running hash after it (common/transcript.py,
  ``chain_hash``): the late joiner starts from it, so its ``/hash`` equals
  the hash of a member who was there from #1;
* who was in the room after it (a Roster that follows the events as they
  fall out): the joiner's member list, and the accounts its ignores follow,
  are right from the window's first event on.

All three go to the asker in one ``HistoryStart``, before its History.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator

from common.framing import MAX_RECORD_BYTES
from common.messages import EventKind, HistoryStart, RoomEvent
from common.transcript import EMPTY_HASH, Roster, chain_hash

# A HistoryStart is one record: the summary and the hash take under 100 bytes, the members the rest.
HISTORY_START_MEMBERS_BYTES = MAX_RECORD_BYTES - 384


class RoomLog:
    """The numbered events of the room, the newest ones kept."""

    def __init__(self, server_name: str, max_events: int, max_bytes: int) -> None:
        self.max_events, self.max_bytes = max_events, max_bytes
        self._events: deque[tuple[RoomEvent, int]] = deque()   # (event, its encoding's bytes), oldest first
        self.bytes = 0                 # the kept events' encodings, 2 length bytes each included
        self.latest_seq = 0            # the newest event's number (0 before the first)
        self.not_kept_seq = 0          # the events up to this number are no longer kept
        self.running_hash = EMPTY_HASH   # the transcript hash after them
        self._roster = Roster(server_name)   # who was in the room after them

    def append(self, event: RoomEvent, size_bytes: int) -> None:
        """Keep ``event`` (numbered ``latest_seq + 1``, ``size_bytes`` encoded),
        and let the oldest fall out while the window holds too much."""
        self._events.append((event, size_bytes))
        self.latest_seq, self.bytes = event.seq, self.bytes + size_bytes
        while len(self._events) > self.max_events or (self.bytes > self.max_bytes and len(self._events) > 1):
            oldest, oldest_bytes = self._events.popleft()
            self.bytes -= oldest_bytes
            self.not_kept_seq = oldest.seq
            self.running_hash = chain_hash(self.running_hash, oldest)
            self._roster.apply(oldest)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[RoomEvent]:
        return (event for event, _size in self._events)

    def after(self, seq: int) -> Iterator[tuple[RoomEvent, int]]:
        """The kept events after number ``seq`` (at least ``not_kept_seq``),
        oldest first, each with its encoding's bytes."""
        return itertools.islice(self._events, seq - self.not_kept_seq, None)

    def start(self) -> HistoryStart:
        """What stands for the events no longer kept (there must be some)."""
        server_name = self._roster.server_name
        return HistoryStart(RoomEvent(self.not_kept_seq, EventKind.NOT_KEPT, server_name, ""),
                            self.running_hash, self._roster.members(HISTORY_START_MEMBERS_BYTES))
