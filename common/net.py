"""Socket helpers shared by the role files of both labs.

common/ is otherwise sans-IO; this module and ui.py are where the kit meets
the operating system. Everything here serves one pattern (STYLE.md section 2):
one thread runs one ``selectors`` loop over non-blocking sockets, and every
registered key's ``data`` is the callable to run when that socket is ready,
as ``handler(mask)``. A loop is then just::

    for key, mask in selector.select(timeout):
        key.data(mask)

Outgoing bytes wait in a per-connection bytearray (``SecureSession.outgoing``)
and are sent when the socket is writable: see ``send_pending``.

A server takes connections through an ``Acceptor`` (limits, and no busy spin
when file descriptors run out); a client makes one with a ``Connector``
(every address a host name stands for, in turn). ``BackgroundWork`` runs slow
calls in threads and hands their results back to the loop. A Lab 2 server
chooses where its room is sent with ``open_room_channel``, by trying it.
"""
from __future__ import annotations

import enum
import errno
import functools
import ipaddress
import os
import queue
import selectors
import socket
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from common.errors import ProtocolError
from common.messages import Message
from common.session import SecureSession

LISTEN_BACKLOG = 128   # a class connecting at once must not be turned away
RECV_BYTES = 65536
ON_WINDOWS = sys.platform == "win32"


# --- Errors in the system's words ------------------------------------------------

def error_text(number: int) -> str:
    """The system's words for the error ``number`` of a socket call ("Connection
    refused"). os.strerror knows the C library's numbers only; Windows' socket
    errors are Winsock's (WSAECONNREFUSED is 10061), for which it says "Unknown
    error", and which socket.errorTab names (it exists on Windows only)."""
    winsock_words = getattr(socket, "errorTab", {}).get(number)
    return winsock_words.rstrip(".") if winsock_words else os.strerror(number)


def describe_error(error: Exception) -> str:
    """Why a socket call failed, for a person: "Connection refused", not
    "[Errno 111] Connection refused"; an error with a number only gets its
    words from error_text; one with a message only (ours), or one that is no
    OSError (a ProtocolError), is that message."""
    if not isinstance(error, OSError):
        return str(error)
    if error.strerror:
        return error.strerror
    if isinstance(error.errno, int):
        return error_text(error.errno)
    return str(error)


# --- TCP ------------------------------------------------------------------------

def listening_socket(host: str, port: int) -> socket.socket:
    """Return a non-blocking TCP socket listening on (host, port); port 0 lets
    the OS pick one (read it back with ``sock.getsockname()[1]``).
    Raises OSError if the address is taken or unknown."""
    sock = socket.socket(_family_of(host), socket.SOCK_STREAM)
    # After a server quits, its old connections linger in TIME_WAIT for a minute
    # or two. On Linux and macOS, SO_REUSEADDR lets a restarted server bind the
    # port anyway. Windows lets it without asking, and gives SO_REUSEADDR another
    # meaning (a second live server could take the port): there we set nothing,
    # as socket.create_server does. Not SO_EXCLUSIVEADDRUSE either: it would keep
    # the port from a restarted server for as long as old connections linger.
    if not ON_WINDOWS:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sock.family == socket.AF_INET6:
        # Bound to "::", an IPv6 socket can take IPv4 connections too (they show
        # as ::ffff:127.0.0.1), if IPV6_V6ONLY is off. Linux has it off by
        # default, Windows on: we say what we want, so "::" means every address.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


# accept() fails with these when a per-process (EMFILE) or system-wide (ENFILE)
# table of file descriptors, or kernel memory, is full. Windows says WSAEMFILE.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                               getattr(errno, "WSAEMFILE", errno.EMFILE)})
ACCEPT_PAUSE_SECONDS = 1.0      # how long the listener rests when we are out of descriptors
NOTE_INTERVAL_SECONDS = 10.0    # at most one note per this long about refused connections
ACCEPTS_PER_TURN = 64           # connections taken each time the listener is ready


class Acceptor:
    """Accept connections on a listening socket, within limits, without ever
    spinning, and without turning a flood of connections into a flood of notes.

        Acceptor(selector, listener, admit, on_connection, note)

    For each new connection, ``admit(addr)`` returns None to take it, or why
    not: the connection is then closed at once, before any work is spent on
    it. ``on_connection(sock, addr)`` gets the ones taken (non-blocking, Nagle
    off). ``note(text)`` reports trouble, at most once per
    NOTE_INTERVAL_SECONDS, with a count of what happened in between.

    Out of file descriptors, accept() fails but leaves the connection queued,
    so the listener stays readable: a loop that simply tried again would spin
    at 100% CPU. So the Acceptor stops watching the listener, and ``tick()``,
    called from the loop's timer, watches it again ACCEPT_PAUSE_SECONDS later,
    when closed connections may have freed some descriptors.
    """

    def __init__(self, selector: selectors.BaseSelector, listener: socket.socket,
                 admit: Callable[[tuple], str | None],
                 on_connection: Callable[[socket.socket, tuple], None],
                 note: Callable[[str], None]) -> None:
        self._selector = selector
        self._listener = listener
        self._admit = admit
        self._on_connection = on_connection
        self._note = note
        self._paused_until: float | None = None
        self._unreported = 0               # refusals and failures not noted yet
        self._quiet_until = 0.0            # no note before this time
        selector.register(listener, selectors.EVENT_READ, self._on_readable)

    def tick(self) -> None:
        """Call every second or so: resumes accepting after a pause, and counts
        the trouble that was not noted yet."""
        now = time.monotonic()
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, self._on_readable)
        if self._unreported and now >= self._quiet_until:
            self._note(f"{self._unreported} more connections refused or failed since the last note")
            self._unreported = 0
            self._quiet_until = now + NOTE_INTERVAL_SECONDS

    def _on_readable(self, _mask: int) -> None:
        # Take every connection waiting (up to ACCEPTS_PER_TURN), not one a turn: a
        # window polls its sockets only every few milliseconds, and a stranger
        # opening connections faster than that would otherwise keep the queue
        # full and everyone else waiting in it.
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, addr = accept(self._listener)
            except BlockingIOError:   # nobody else is waiting
                return
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    self._selector.unregister(self._listener)
                    self._paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
                    self._trouble(f"cannot accept connections: {describe_error(error)}; "
                                  f"pausing {ACCEPT_PAUSE_SECONDS:g} s at a time")
                    return
                self._trouble(f"a connection attempt failed: {describe_error(error)}")   # reset while it waited
                continue
            refusal = self._admit(addr)
            if refusal is not None:
                sock.close()
                self._trouble(f"refused a connection from {describe(addr)}: {refusal}")
                continue
            self._on_connection(sock, addr)

    def _trouble(self, text: str) -> None:
        now = time.monotonic()
        if now >= self._quiet_until:
            self._note(text)
            self._quiet_until = now + NOTE_INTERVAL_SECONDS
        else:   # tick() gives the count later
            self._unreported += 1


def accept(listener: socket.socket) -> tuple[socket.socket, tuple]:
    """Accept one waiting connection and return it, ready for the loop: non-blocking,
    with Nagle's algorithm off. Raises BlockingIOError if nobody was waiting."""
    conn, addr = listener.accept()
    try:
        _prepare(conn)
    except OSError:   # the peer reset it already: close it, or the descriptor leaks
        conn.close()
        raise
    return conn, addr


def start_connect(host: str, port: int) -> socket.socket:
    """Begin connecting to the first address ``host`` resolves to, without
    waiting, and return the socket.

    The connection is made once the socket turns writable: register it for
    EVENT_WRITE, then call ``finish_connect``. Enough for a numeric address
    (127.0.0.1 has only one); for a name, use ``Connector``, which tries
    every address. Raises OSError if the name does not resolve.
    """
    family, kind, proto, _name, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    _prepare(sock)
    # connect_ex returns an error number instead of raising. EINPROGRESS (or
    # EWOULDBLOCK on Windows) means "started": the handshake of TCP goes on in
    # the kernel while our loop keeps running.
    sock.connect_ex(addr)
    return sock


def finish_connect(sock: socket.socket) -> None:
    """Call when a connecting socket turns writable. Raises OSError (refused,
    unreachable, timed out) if the connection failed."""
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, error_text(error))


Resolver = Callable[..., list]   # socket.getaddrinfo, or a stand-in a test controls


class Connector:
    """Connect to (host, port) without blocking the loop, trying every address
    the name resolves to, in turn, as ``socket.create_connection`` does.

    A name may stand for several addresses: ``localhost`` is often ::1 first,
    then 127.0.0.1. A server listening on 127.0.0.1 only refuses the ::1
    attempt, and a client that gave up there would say "connection refused"
    about a server that is up. So on each failure we close that socket, start
    the next address, and only when none is left report them all::

        Connector(selector, "localhost", 5050, on_connected, on_failed)

    ``on_connected(sock)`` runs in the loop once one address answers: the
    socket is connected, non-blocking, and no longer registered (register it
    with your own handler). ``on_failed(reason)`` runs if every address
    failed; ``reason`` is the error, or, for several addresses, each one tried
    and why it failed. Looking the name up still blocks, briefly; an address
    like 192.168.1.20 needs no lookup. Like create_connection without a
    timeout, an address that never answers holds us until the OS gives up
    (about two minutes on Linux) before the next one is tried; RFC 8305
    ("Happy Eyeballs") starts the next after 250 ms, left out to keep this short.

    Raises OSError at once if the name does not resolve, or if no address
    could even be tried (no IPv6 on this machine, say).
    """

    def __init__(self, selector: selectors.BaseSelector, host: str, port: int,
                 on_connected: Callable[[socket.socket], None],
                 on_failed: Callable[[str], None],
                 resolve: Resolver = socket.getaddrinfo) -> None:
        self._selector = selector
        self._on_connected = on_connected
        self._on_failed = on_failed
        # getaddrinfo lists the addresses in the order this system prefers
        # (RFC 6724). An address listed twice (in /etc/hosts, say) is tried once.
        found = resolve(host, port, type=socket.SOCK_STREAM)
        self._addresses = list(dict.fromkeys(
            (family, kind, proto, addr) for family, kind, proto, _name, addr in found))
        self._failures: list[tuple[tuple, str]] = []   # (address, why it failed)
        self._address: tuple = ()                  # the address of the attempt in flight
        self.sock: socket.socket | None = None     # the socket of that attempt
        if not self._start_next():
            raise OSError(self._reason())

    def cancel(self) -> None:
        """Give up the attempt in flight (the user quit while connecting)."""
        if self.sock is not None:
            self._selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def _start_next(self) -> bool:
        """Start connecting to the next address; False if none is left."""
        while self._addresses:
            family, kind, proto, addr = self._addresses.pop(0)
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as error:   # e.g. an IPv6 address on a machine without IPv6
                self._failures.append((addr, describe_error(error)))
                continue
            _prepare(sock)
            # connect_ex returns an error number instead of raising. EINPROGRESS
            # (or EWOULDBLOCK on Windows) means "started": TCP's handshake goes
            # on in the kernel while our loop keeps running; any other error
            # number means this address failed at once (no route to it).
            error = sock.connect_ex(addr)
            if error not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                sock.close()
                self._failures.append((addr, error_text(error)))
                continue
            self.sock = sock
            self._address = addr
            self._selector.register(sock, selectors.EVENT_WRITE, self._on_writable)
            return True
        return False

    def _on_writable(self, _mask: int) -> None:
        # Writable means TCP's handshake is over, one way or the other:
        # SO_ERROR says which (finish_connect raises if it failed).
        sock, self.sock = self.sock, None
        self._selector.unregister(sock)
        try:
            finish_connect(sock)
        except OSError as error:
            sock.close()
            self._failures.append((self._address, describe_error(error)))
            if not self._start_next():
                self._on_failed(self._reason())
            return
        self._on_connected(sock)

    def _reason(self) -> str:
        if len(self._failures) == 1:   # one address: its error says it all
            return self._failures[0][1]
        return "tried " + ", ".join(f"{describe(addr)} ({why})" for addr, why in self._failures)


def receive(sock: socket.socket) -> bytes:
    """Return what has arrived on a readable socket; b"" means the peer closed.
    Raises OSError if the connection broke (reset by the peer, say)."""
    return sock.recv(RECV_BYTES)


def send_pending(selector: selectors.BaseSelector, sock: socket.socket,
                 outgoing: bytearray) -> None:
    """Send as much of ``outgoing`` as the kernel takes now, and drop it from the
    buffer; watch the socket for writability only while bytes remain.

    A socket is writable almost all the time, so asking for EVENT_WRITE with
    nothing to send would wake the loop in a busy spin. Raises OSError if the
    connection broke, except when the peer has closed it: then what is left to
    send is dropped, and the read path finds the end.
    """
    if outgoing:
        try:
            sent = sock.send(outgoing)
        except BlockingIOError:  # the kernel's send buffer is full: wait for EVENT_WRITE
            sent = 0
        except (BrokenPipeError, ConnectionResetError):
            # The peer closed, and answered our next bytes with a reset. What it said
            # before it went (a Goodbye: "the server is shutting down") may still wait in
            # our receive buffer: reading it, then the end, tells the user why, where
            # failing here would say only "Broken pipe".
            sent = len(outgoing)
        del outgoing[:sent]
    key = selector.get_key(sock)
    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if outgoing else 0)
    if key.events != wanted:
        selector.modify(sock, wanted, key.data)


def send_last_words_and_close(sock: socket.socket, outgoing: bytearray) -> None:
    """Send what of ``outgoing`` (a Goodbye, usually) the kernel takes now, then close.

    It never waits: a server that waited here for a peer that stopped reading
    would freeze the whole room meanwhile. The last words are a few bytes and
    the send buffer is nearly always empty, so they go; for a peer that stopped
    reading they are lost, which it would not read anyway. A peer that is gone
    already cannot be told anything, so that OSError is ignored.
    """
    try:
        sock.setblocking(False)
        sock.send(outgoing)
    except OSError:
        pass  # the peer is gone, or its buffer is full: closing is all that is left to do
    outgoing.clear()
    sock.close()


def describe(addr: tuple) -> str:
    """'host:port' for an address tuple, with brackets around an IPv6 host."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Phase(enum.Enum):
    """Where a server's connection is in its life; each phase allows other messages."""
    HANDSHAKE = "handshake"   # proving it knows the pre-shared key
    LOGIN = "login"           # encrypted, waiting for Login or Register
    CHECKING = "checking"     # its password is queued for, or in, a worker
    MEMBER = "member"         # logged in: the chat partner, or a member of the room


@dataclass(eq=False)   # eq=False: two connections are equal only if they are the same object
class Connection:
    """A server's end of one client's TCP connection and the encrypted session it carries."""
    sock: socket.socket
    session: SecureSession
    address: str               # "host:port", for notes
    source: str                # the host alone: limits count per source address
    phase: Phase = Phase.HANDSHAKE

    def read(self) -> list[Message]:
        """Take what arrived and return the messages it completes. Raises
        ProtocolError when the peer closed its end (an empty read) or broke the
        protocol (a session.BadRecord, carrying the genuine messages that came
        before the bad record), OSError when the connection broke."""
        data = receive(self.sock)
        if not data:
            midway = " in the middle of a record" if self.session.in_the_middle_of_a_record else ""
            raise ProtocolError(f"closed the connection{midway}")
        return self.session.receive(data)

    def flush(self, selector: selectors.BaseSelector, max_unsent: int) -> None:
        """Send what is queued. Raises OSError if the connection broke, or if
        ``max_unsent`` bytes wait: a peer that never reads would otherwise make
        the server keep everything said to it, and its memory grow without end."""
        send_pending(selector, self.sock, self.session.outgoing)
        if len(self.session.outgoing) > max_unsent:
            unsent = len(self.session.outgoing)
            self.session.outgoing.clear()
            raise OSError(f"stopped reading: dropped with {unsent} bytes unsent (the limit is {max_unsent})")

    def close(self, selector: selectors.BaseSelector) -> None:
        """Stop watching the socket; send the last words queued (a Goodbye, a refusal), then close."""
        selector.unregister(self.sock)
        send_last_words_and_close(self.sock, self.session.outgoing)


def _prepare(sock: socket.socket) -> None:
    sock.setblocking(False)
    # Nagle's algorithm holds back a small segment while an earlier one is not
    # yet acknowledged, to save packets. A chat line is small and should go at
    # once, so we switch it off.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- UDP broadcast (Lab 2) --------------------------------------------------------------

# Room for the largest UDP datagram there is (65,507 bytes of IPv4 payload), far
# more than any valid room datagram (1200 bytes): so no system cuts one short.
# Linux and macOS would cut it silently; Windows would refuse it with an error
# (WSAEMSGSIZE, 10040) that a loop must not let escape. Whole, an oversize
# datagram reaches the size check and is rejected as any damaged one is.
MAX_DATAGRAM_RECV_BYTES = 65535


def broadcast_sender() -> socket.socket:
    """Return a UDP socket allowed to send to a broadcast address.

    Without SO_BROADCAST the kernel refuses a broadcast destination, so a
    program cannot flood the network by a typo in an address.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setblocking(False)
    return sock


def broadcast_receiver(port: int) -> socket.socket:
    """Return a non-blocking UDP socket that hears broadcasts to ``port``.

    It binds ('', port): every local address, so it hears the subnet's
    broadcast address as well as 127.255.255.255. Several programs on one
    machine (a class demo: many clients) can bind the same port because each
    sets SO_REUSEADDR, and SO_REUSEPORT where the OS has it (macOS and the
    BSDs need it); the kernel then gives every one of them its own copy of
    each broadcast datagram. Raises OSError if the port cannot be bound.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(("", port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    enlarge_receive_buffer(sock)
    return sock


# The kernel keeps a UDP socket's datagrams in a buffer until the program reads
# them, and drops every new one while it is full: it cannot tell the server's
# from anyone else's. Anyone on the LAN may send to the broadcast port, so a
# flood of forgeries fills a small buffer (Linux's default holds ~200 KB, some
# 150 datagrams on loopback) while the program waits for the CPU, and the
# server's genuine datagrams are lost with the flood. A larger buffer rides out
# those waits; the client then reads it dry each turn (read_datagrams).
ROOM_RECEIVE_BUFFER_BYTES = 4 << 20


def enlarge_receive_buffer(sock: socket.socket, wanted_bytes: int = ROOM_RECEIVE_BUFFER_BYTES) -> int:
    """Ask for a receive buffer of ``wanted_bytes``, or the largest the OS
    allows below it, and return what the socket has. Linux silently caps the
    request at net.core.rmem_max; macOS refuses one above kern.ipc.maxsockbuf
    (ENOBUFS), so smaller sizes are tried; Windows takes what it is given."""
    while wanted_bytes >= 1 << 16:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted_bytes)
            break
        except OSError:   # above the system's limit: ask for half
            wanted_bytes //= 2
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def read_datagrams(sock: socket.socket, max_count: int) -> list[tuple[bytes, tuple]]:
    """Read the datagrams waiting on a non-blocking UDP socket, up to
    ``max_count``: (datagram, source address) each, in the order they came.
    Reading is cheap next to opening one: read first, then decide which are
    worth opening (transcript.DatagramGate.choose)."""
    received = []
    for _ in range(max_count):
        try:
            received.append(sock.recvfrom(MAX_DATAGRAM_RECV_BYTES))
        except BlockingIOError:   # nothing left: read dry
            break
    return received


# --- UDP multicast (Lab 2 with --multicast GROUP) -------------------------------------------

# How many routers a room datagram may cross. 1 keeps it on the LAN, like a broadcast;
# a larger value lets a multicast-routed campus carry the room to other subnets.
MULTICAST_TTL = 1


def multicast_sender(interface_host: str) -> socket.socket:
    """Return a non-blocking UDP socket that sends to multicast groups out of the
    interface that has the address ``interface_host`` ("0.0.0.0": the interface
    the routing table picks, normally the one with the default route).

    A broadcast goes to every host of the subnet; a multicast datagram only to
    the hosts that joined its group, and the switch may keep it off the other
    ports. IP_MULTICAST_LOOP gives programs on this machine a copy too (the
    server's own host may run a client). The loopback interface has no route for
    multicast, so on one machine the interface must be chosen explicitly:
    127.0.0.1. Raises OSError if the name does not resolve.
    """
    interface = socket.inet_aton(socket.gethostbyname(interface_host))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
    sock.setblocking(False)
    return sock


def multicast_receiver(group: str, port: int, server_host: str) -> socket.socket:
    """Return a non-blocking UDP socket that hears ``group`` on ``port``: a
    ``broadcast_receiver`` that has joined the group (``join_group``).
    Raises OSError if the port cannot be bound or the group not joined."""
    sock = broadcast_receiver(port)
    try:
        join_group(sock, group, server_host)
    except OSError:
        sock.close()
        raise
    return sock


def join_group(sock: socket.socket, group: str, server_host: str) -> None:
    """Make a bound UDP socket hear ``group`` too.

    Joining (IP_ADD_MEMBERSHIP) happens on one interface: the one this machine
    uses to reach ``server_host``, since the server's datagrams arrive there
    (127.0.0.1 for a server on this machine). The kernel then tells the
    switches and routers (IGMP) that this host wants the group.
    Raises OSError if the group cannot be joined.
    """
    # A server reached over loopback (127.0.0.1 or ::1) sends the group out of 127.0.0.1.
    interface = "127.0.0.1" if _is_loopback(server_host) else interface_facing(server_host)
    membership = socket.inet_aton(group) + socket.inet_aton(interface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)


def interface_facing(host: str) -> str:
    """The address of this machine's interface that packets to ``host`` leave by.

    connect() on a UDP socket sends nothing: it only asks the routing table for
    the way to ``host``, and getsockname() then tells our end of it.
    Raises OSError if there is no route to ``host``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((socket.gethostbyname(host), 9))   # port 9, "discard": any port will do
        return probe.getsockname()[0]


# --- Where the room is heard: broadcast, or multicast where broadcast does not reach -----

# The one-machine room's group where loopback cannot broadcast (macOS: lo0 has no
# broadcast, so a datagram to 127.255.255.255 reaches nobody). 239.0.0.0/8 is
# "administratively scoped" (RFC 2365): routers never carry it off the site.
LOOPBACK_GROUP = "239.255.76.61"
LOOPBACK_BROADCAST = "127.255.255.255"   # the one-machine room's address: loopback broadcast, as Linux has it
PROBE_TIMEOUT_SECONDS = 1.0   # loopback answers in microseconds; a busy machine gets plenty more
PROBE_LISTENERS = 2           # a room needs every member to hear a datagram, not just one of them
PROBE_PREFIX = b"chat lab kit probe "   # then 16 random bytes: no room datagram, so members drop it


@dataclass
class RoomChannel:
    """How a Lab 2 server sends the room's datagrams: the socket, the
    destination, the multicast group members must join ("" for broadcast), and
    the one line that says what was chosen and why."""
    sock: socket.socket
    address: tuple[str, int]
    group: str
    choice: str


def open_room_channel(host: str, broadcast_addr: str, port: int, group: str) -> RoomChannel:
    """Choose how the room is sent, by trying it: a probe datagram goes to the
    room's address, and PROBE_LISTENERS sockets bound to ``port`` here, as
    clients bind it, must each hear it (``hears_itself``).

    With ``group`` set (MULTICAST_GROUP), the room is multicast to it, out of
    the interface with the address ``host``. Otherwise it is broadcast to
    ``broadcast_addr``; but where that is LOOPBACK_BROADCAST and reaches no
    socket here (macOS), the one-machine room is multicast to LOOPBACK_GROUP out
    of 127.0.0.1 instead, and clients are told the group at login. A probe that
    fails otherwise changes nothing (hosts elsewhere may still hear the room):
    the choice line then starts with "warning:" and says why.
    Raises OSError if no socket can be made.
    """
    if group:
        channel = RoomChannel(multicast_sender(host), (group, port), group, "")
        channel.choice = f"the room is multicast to {group}:{port} (MULTICAST_GROUP)"
        return _tried(channel, host, "a firewall may drop it")
    channel = RoomChannel(broadcast_sender(), (broadcast_addr, port), "", "")
    channel.choice = f"the room is broadcast to {broadcast_addr}:{port}"
    if broadcast_addr != LOOPBACK_BROADCAST or hears_itself(channel, host):
        return _tried(channel, host, "a firewall may drop it, or it is not this network's broadcast address")
    channel.sock.close()
    channel = RoomChannel(multicast_sender("127.0.0.1"), (LOOPBACK_GROUP, port), LOOPBACK_GROUP, "")
    channel.choice = (f"the room is multicast to {LOOPBACK_GROUP}:{port} on loopback, not broadcast: a probe "
                      f"to {broadcast_addr} reached no socket here (this system's loopback cannot broadcast); "
                      "clients learn the group at login")
    return _tried(channel, "127.0.0.1", "a firewall may drop it")


def _tried(channel: RoomChannel, host: str, why_not: str) -> RoomChannel:
    """The channel, its choice line completed by what a probe found."""
    if hears_itself(channel, host):
        channel.choice += f"; a probe datagram reached {PROBE_LISTENERS} sockets bound to its port here"
    else:
        channel.choice = (f"warning: {channel.choice}, but a probe datagram did not reach {PROBE_LISTENERS} "
                          f"sockets bound to its port here ({why_not}); members who hear nothing follow the "
                          "room over TCP")
    return channel


def hears_itself(channel: RoomChannel, host: str) -> bool:
    """Whether a datagram sent on ``channel`` reaches PROBE_LISTENERS sockets
    bound to its port on this host (each a member of its group, joined on the
    interface of ``host``), within PROBE_TIMEOUT_SECONDS.

    Two listeners, not one: where the address is taken for a unicast one (a
    system with no route for loopback broadcast may do that), the kernel hands
    the datagram to one socket of those sharing the port, and only that one
    member would hear the room.
    """
    token = PROBE_PREFIX + os.urandom(16)
    listeners: list[socket.socket] = []
    try:
        for _ in range(PROBE_LISTENERS):
            listeners.append(broadcast_receiver(channel.address[1]))
            if channel.group:
                membership = socket.inet_aton(channel.group) + socket.inet_aton(socket.gethostbyname(host))
                listeners[-1].setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        channel.sock.sendto(token, channel.address)
        return all(_heard(listener, token) for listener in listeners)
    except OSError:   # refused at once: no route, or a firewall that says so
        return False
    finally:
        for listener in listeners:
            listener.close()


def _heard(listener: socket.socket, token: bytes) -> bool:
    deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        listener.settimeout(remaining)
        try:
            if listener.recv(MAX_DATAGRAM_RECV_BYTES) == token:
                return True
        except TimeoutError:
            return False
        # anything else is another room's datagram on this port: wait on for ours
    return False


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:   # a host name
        return False


@functools.lru_cache(maxsize=256)   # each source asked once; bounded, since a source may be anyone
def is_own_address(address: str) -> bool:
    """Whether ``address`` is one of this machine's own IP addresses: binding a
    socket to an address succeeds only if some interface here has it.

    A client that reached its server over loopback takes room datagrams from
    any of them: on macOS, multicast on loopback may arrive from the address of
    another interface of this same machine.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:   # EADDRNOTAVAIL: no interface here has it
            return False
    return True


def firewall_causes(platform: str | None = None) -> str:
    """What on this kind of system (``sys.platform`` by default) may keep the
    room's UDP datagrams from a program, in the system's own words: the
    deaf-member warning and the doctor name it. docs/lab2.md lists each."""
    platform = platform or sys.platform
    if platform == "win32":
        return "Windows Defender Firewall, which blocks Python on a network with the Public profile"
    if platform == "darwin":
        return ("macOS's application firewall, or Local Network privacy for the app Python runs in "
                "(Terminal, VS Code)")
    return "a host firewall (nft, ufw)"


# --- Slow work off the loop ----------------------------------------------------------

class BackgroundWork:
    """Run slow calls (password hashes) in worker threads and hand each result
    back to the selectors loop, on the loop's own thread.

    A worker cannot touch the loop's state: two threads changing one session
    would corrupt it. So a finished call puts its future in a queue and writes
    one byte into a socketpair whose other end the selector watches. The loop
    wakes up, drains the queue and runs each ``on_done(future)`` itself.
    """

    def __init__(self, selector: selectors.BaseSelector, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="worker")
        self._finished: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector = selector
        selector.register(self._wake_reader, selectors.EVENT_READ, self._on_readable)

    def submit(self, call: Callable[[], object], on_done: Callable[[Future], None]) -> None:
        """Run ``call()`` in a worker; later, the loop runs ``on_done(future)``,
        where ``future.result()`` returns call's result or raises its exception."""
        def finished(future: Future) -> None:  # runs in the worker thread
            self._finished.put((future, on_done))
            self._wake_writer.send(b"\x00")
        self._pool.submit(call).add_done_callback(finished)

    def _on_readable(self, _mask: int) -> None:
        self._wake_reader.recv(RECV_BYTES)  # the bytes only woke us; the queue holds the results
        while not self._finished.empty():
            future, on_done = self._finished.get()
            # Each on_done is the error boundary of its own peer. If one still
            # raises (a bug), the others queued behind it must run all the
            # same, and the loop must go on: as in CPython's socketserver, we
            # report the error and carry on.
            try:
                on_done(future)
            except Exception:   # any bug in one callback: reported, then the next one runs
                print("a background callback failed:", file=sys.stderr)
                traceback.print_exc()

    def close(self) -> None:
        """Wait for running calls, then release the threads and the socketpair."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._selector.unregister(self._wake_reader)
        self._wake_reader.close()
        self._wake_writer.close()
