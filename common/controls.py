"""The Lab 2 server operator's controls over the room, without any I/O.

Whoever runs the server (the instructor, at its window or its terminal)
types these as lines, where anything else is said to the room:

    /kick NAME [REASON]     remove a member; the room sees why, and so does the member
    /mute NAME [MINUTES]    refuse its messages, DMs and renames for a while (10 min)
    /unmute NAME            let it speak again before that
    /ban NAME|ADDRESS       refuse an IP address until the server stops, and
                            remove every member from it

Each is a numbered room event, so every screen shows it in the same place:
``#12 * bob was removed: spamming``, ``#13 * carol is muted for 10 min``,
``#14 * carol may speak again``, ``#15 * mallory was removed: banned until
the server stops``. A kick is no ban: the member may log in again at once.
A mute belongs to the account: it lasts through a new login.

One rule nobody types: a member the server has heard nothing from for
``max_idle_seconds`` is removed, and frees its place in the room. Nothing
means no request at all, of any kind. A running client asks for what it may
have missed at least once a minute even when it misses nothing
(common/transcript.py, KEEPALIVE_SECONDS), so a student who only reads is
never idle; a program that hung, or a laptop asleep with its connection still
open on the server, is. A program that keeps its members alive on purpose is
not stopped by this rule: that is what /kick and /ban are for.

``command()`` and ``tick()`` return the members the server must close, each
with the words of its Goodbye; the Room already knows, and their leaves are
numbered REMOVE events with the reason. A ban closes every other connection
from its address as well (logins in progress, handshakes): the server asks
the Doorway which (``Doorway.is_banned``), and the Doorway refuses that
address's new connections before any handshake work.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable

from common.admission import BANNED, Doorway
from common.errors import ProtocolError
from common.room import Room
from common.transcript import KEEPALIVE_SECONDS

OPERATOR_COMMANDS = ("/kick", "/mute", "/unmute", "/ban")
DEFAULT_MUTE_MINUTES = 10
MAX_MUTE_MINUTES = 24 * 60         # a class is shorter than a day; /unmute ends one sooner
MAX_REASON_BYTES = 200             # a reason goes into a Goodbye too, after a few words of its own
IDLE_CHECK_INTERVAL_SECONDS = 1.0  # idle members and mutes that ran out: looked for this often
NO_REASON = "no reason given"
USAGE = {
    "/kick": "usage: /kick NAME [REASON]",
    "/mute": f"usage: /mute NAME [MINUTES], MINUTES a whole number from 1 to {MAX_MUTE_MINUTES}",
    "/unmute": "usage: /unmute NAME",
    "/ban": "usage: /ban NAME or /ban ADDRESS",
}


def removal_words(reason: str) -> str:
    """The Goodbye a removed member is closed with."""
    return f"you were removed from the room: {reason}"


YOU_ARE_BANNED = removal_words(BANNED)   # to every connection from a banned address


def duration(seconds: float) -> str:
    """'30 min' for whole minutes, else '90 s': how long, as screens show it."""
    return f"{seconds // 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


class Operator:
    """The server operator's commands, and the idle limit, applied to ``room``
    (mutes, removals) and ``doorway`` (bans). ``max_idle_seconds`` 0: no idle limit."""

    def __init__(self, room: Room, doorway: Doorway, max_idle_seconds: float,
                 show_note: Callable[[str], None] = lambda text: None) -> None:
        self.room = room
        self.doorway = doorway
        self.max_idle_seconds = max_idle_seconds
        self.show_note = show_note   # a line on the operator's own screen
        self._next_check_at = float("-inf")
        self._handlers: dict[str, Callable[[str, str], dict[Hashable, str]]] = {
            "/kick": self._kick, "/mute": self._mute, "/unmute": self._unmute, "/ban": self._ban,
        }

    def command(self, command: str, argument: str) -> dict[Hashable, str]:
        """Carry out ``command`` (one of OPERATOR_COMMANDS) with ``argument``,
        the rest of the typed line. Returns the members to close, each with its
        Goodbye's words. Raises ProtocolError, with the usage or the reason,
        if nothing was done."""
        target, _, rest = argument.strip().partition(" ")
        if not target:
            raise ProtocolError(USAGE[command])
        return self._handlers[command](target, rest.strip())

    def idle_limit_warning(self) -> str | None:
        """The line a server shows at start when its idle limit would remove members
        who only read: their clients keep alive once every KEEPALIVE_SECONDS."""
        if 0 < self.max_idle_seconds < 2 * KEEPALIVE_SECONDS:
            return (f"warning: MAX_IDLE_SECONDS={self.max_idle_seconds:g} is less than twice the clients' "
                    f"keepalive ({KEEPALIVE_SECONDS:g} s): members who only read will be removed as idle")
        return None

    def tick(self, now: float) -> dict[Hashable, str]:
        """Call often: once a second it ends the mutes whose time is up, and
        returns the members idle for too long, each with its Goodbye's words."""
        if now < self._next_check_at:
            return {}
        self._next_check_at = now + IDLE_CHECK_INTERVAL_SECONDS
        self.room.end_mutes(now)
        if not self.max_idle_seconds:
            return {}
        idle = self.room.idle_members(now, self.max_idle_seconds)
        return self._remove(idle, f"idle for {duration(self.max_idle_seconds)}")

    def _kick(self, name: str, reason: str) -> dict[Hashable, str]:
        if len(reason.encode("utf-8")) > MAX_REASON_BYTES:
            raise ProtocolError(f"a reason is at most {MAX_REASON_BYTES} bytes")
        return self._remove([self.room.member_named(name)], reason or NO_REASON)

    def _mute(self, name: str, minutes: str) -> dict[Hashable, str]:
        if minutes and not (minutes.isascii() and minutes.isdigit() and 1 <= int(minutes) <= MAX_MUTE_MINUTES):
            raise ProtocolError(USAGE["/mute"])
        seconds = 60 * (int(minutes) if minutes else DEFAULT_MUTE_MINUTES)
        self.room.mute(self.room.member_named(name), seconds, duration(seconds))
        return {}

    def _unmute(self, name: str, rest: str) -> dict[Hashable, str]:
        if rest:
            raise ProtocolError(USAGE["/unmute"])
        self.room.unmute(name)
        return {}

    def _ban(self, target: str, rest: str) -> dict[Hashable, str]:
        if rest:
            raise ProtocolError(USAGE["/ban"])
        try:
            address = str(ipaddress.ip_address(target))
        except ValueError:   # not an address: a member's name, then
            try:
                address = self.room.source_of(self.room.member_named(target))
            except ProtocolError:
                raise ProtocolError(f"{target} is neither a member's name nor an IP address") from None
        self.doorway.ban(address)
        self.show_note(f"{address} is banned until the server stops")   # said even if nobody was from it
        return self._remove([conn for conn in self.room.members
                             if self.doorway.is_banned(self.room.source_of(conn))], BANNED)

    def _remove(self, members: list[Hashable], reason: str) -> dict[Hashable, str]:
        for conn in members:
            self.room.remove(conn, reason)
        return {conn: removal_words(reason) for conn in members}
