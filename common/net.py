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
"""
from __future__ import annotations

import os
import queue
import selectors
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

Handler = Callable[[int], None]  # called with the selector's event mask
LISTEN_BACKLOG = 128   # a class connecting at once must not be turned away
LAST_WORDS_TIMEOUT_SECONDS = 1.0
RECV_BYTES = 65536


# --- TCP ------------------------------------------------------------------------

def listening_socket(host: str, port: int) -> socket.socket:
    """Return a non-blocking TCP socket listening on (host, port); port 0 lets
    the OS pick one (read it back with ``sock.getsockname()[1]``).
    Raises OSError if the address is taken or unknown."""
    sock = socket.socket(_family_of(host), socket.SOCK_STREAM)
    # After a server quits, its old connections linger in TIME_WAIT for a minute
    # or two. SO_REUSEADDR lets a restarted server bind the port anyway. Windows
    # gives SO_REUSEADDR another meaning (two live servers could share a port),
    # so there we ask for the opposite, exclusive use.
    if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def accept(listener: socket.socket) -> tuple[socket.socket, tuple]:
    """Accept one waiting connection and return it, ready for the loop: non-blocking,
    with Nagle's algorithm off. Raises BlockingIOError if nobody was waiting."""
    conn, addr = listener.accept()
    _prepare(conn)
    return conn, addr


def start_connect(host: str, port: int) -> socket.socket:
    """Begin connecting to (host, port) without waiting, and return the socket.

    The connection is made once the socket turns writable: register it for
    EVENT_WRITE, then call ``finish_connect``. Looking the name up still
    blocks, briefly; an address like 192.168.1.20 needs no lookup at all.
    Raises OSError if the name does not resolve.
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
        raise OSError(error, os.strerror(error))


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
    connection broke.
    """
    if outgoing:
        try:
            sent = sock.send(outgoing)
        except BlockingIOError:  # the kernel's send buffer is full: wait for EVENT_WRITE
            sent = 0
        del outgoing[:sent]
    key = selector.get_key(sock)
    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if outgoing else 0)
    if key.events != wanted:
        selector.modify(sock, wanted, key.data)


def send_last_words_and_close(sock: socket.socket, outgoing: bytearray) -> None:
    """Send what is left in ``outgoing`` (a Goodbye, usually), then close.

    This one send may block, for at most LAST_WORDS_TIMEOUT_SECONDS: the bytes
    are few and the send buffer is nearly always empty, so it returns at once;
    the timeout only bounds a peer that stopped reading. A peer that is gone
    already cannot be told anything, so that OSError is ignored.
    """
    try:
        sock.settimeout(LAST_WORDS_TIMEOUT_SECONDS)
        sock.sendall(outgoing)
    except OSError:
        pass  # the peer is gone or stuck: closing is all that is left to do
    outgoing.clear()
    sock.close()


def describe(addr: tuple) -> str:
    """'host:port' for an address tuple, with brackets around an IPv6 host."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _prepare(sock: socket.socket) -> None:
    sock.setblocking(False)
    # Nagle's algorithm holds back a small segment while an earlier one is not
    # yet acknowledged, to save packets. A chat line is small and should go at
    # once, so we switch it off.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# --- UDP broadcast (Lab 2) --------------------------------------------------------------

MAX_DATAGRAM_RECV_BYTES = 2048   # more than any valid room datagram, so an oversize one shows


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
    return sock


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
    """Return a non-blocking UDP socket that hears ``group`` on ``port``.

    Joining (IP_ADD_MEMBERSHIP) happens on one interface: the one this machine
    uses to reach ``server_host``, since the server's datagrams arrive there.
    The kernel then tells the switches and routers (IGMP) that this host wants
    the group. The port is shared as in ``broadcast_receiver``.
    Raises OSError if the port cannot be bound or the group not joined.
    """
    sock = broadcast_receiver(port)
    try:
        membership = socket.inet_aton(group) + socket.inet_aton(interface_facing(server_host))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    except OSError:
        sock.close()
        raise
    return sock


def interface_facing(host: str) -> str:
    """The address of this machine's interface that packets to ``host`` leave by.

    connect() on a UDP socket sends nothing: it only asks the routing table for
    the way to ``host``, and getsockname() then tells our end of it.
    Raises OSError if there is no route to ``host``.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((socket.gethostbyname(host), 9))   # port 9, "discard": any port will do
        return probe.getsockname()[0]


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
            on_done(future)

    def close(self) -> None:
        """Wait for running calls, then release the threads and the socketpair."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._selector.unregister(self._wake_reader)
        self._wake_reader.close()
        self._wake_writer.close()
