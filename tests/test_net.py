"""common/net.py: the socket helpers, on loopback, driven by a selectors loop
inside the test. Every wait has a deadline; nothing sleeps."""
from __future__ import annotations

import errno
import os
import selectors
import socket
import threading
import time

import pytest

from common import net
from common.errors import ProtocolError
from common.noise import generate_keypair
from common.session import SecureSession
from tests.procs import DEADLINE_SECONDS, free_port, has_ipv6_loopback

PSK = bytes(32)
SERVER_KEY, _SERVER_PUBLIC_KEY = generate_keypair()


@pytest.fixture
def selector():
    with selectors.DefaultSelector() as selector:
        yield selector


def run_loop_until(selector: selectors.BaseSelector, condition, what: str) -> None:
    """Run the loop (as a role file does) until ``condition()``, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for key, mask in selector.select(timeout=0.1):
            key.data(mask)


# --- BackgroundWork --------------------------------------------------------------------

@pytest.mark.points(2)
def test_background_work_runs_every_finished_callback_even_if_one_raises(selector, capsys):
    work = net.BackgroundWork(selector, workers=1)
    results = []

    def broken_on_done(_future):
        raise ValueError("a bug in one peer's callback")

    # One worker takes the calls in order, so once the last one has started,
    # the first three have finished and wait in the queue together.
    last_started, release_last = threading.Event(), threading.Event()

    def last_call():
        last_started.set()
        release_last.wait(DEADLINE_SECONDS)
        return "last"

    work.submit(lambda: "first", broken_on_done)
    work.submit(lambda: "second", lambda future: results.append(future.result()))
    work.submit(lambda: 1 / 0, lambda future: results.append(type(future.exception()).__name__))
    work.submit(last_call, lambda future: results.append(future.result()))
    try:
        assert last_started.wait(DEADLINE_SECONDS)
        run_loop_until(selector, lambda: len(results) >= 2, "the callbacks queued behind the broken one")
        assert results == ["second", "ZeroDivisionError"]
        release_last.set()
        run_loop_until(selector, lambda: len(results) >= 3, "a callback after the broken one's round")
        assert results[2] == "last"
        assert "ValueError: a bug in one peer's callback" in capsys.readouterr().err
    finally:
        release_last.set()
        work.close()


# --- Connector: every address a name stands for -----------------------------------------

def resolver(*hosts: str):
    """A stand-in for socket.getaddrinfo: the name resolves to ``hosts``, in order."""
    def resolve(_name, port, type=0):
        return [(socket.AF_INET6, type, socket.IPPROTO_TCP, "", (host, port, 0, 0)) if ":" in host
                else (socket.AF_INET, type, socket.IPPROTO_TCP, "", (host, port))
                for host in hosts]
    return resolve




class Outcome:
    """What a Connector reported: the connected socket, or why it failed."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.reason: str | None = None

    def connected(self, sock: socket.socket) -> None:
        self.sock = sock

    def failed(self, reason: str) -> None:
        self.reason = reason

    def known(self) -> bool:
        return self.sock is not None or self.reason is not None


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.parametrize("first", [
    pytest.param("::1", marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")),
    "127.0.0.2",
])
def test_connector_tries_the_next_address_when_the_first_refuses(selector, first):
    with socket.create_server(("127.0.0.1", 0)) as listener:   # 127.0.0.1 only
        port = listener.getsockname()[1]
        outcome = Outcome()
        net.Connector(selector, "chat.test", port, outcome.connected, outcome.failed,
                      resolve=resolver(first, "127.0.0.1"))
        run_loop_until(selector, outcome.known, "the connector's verdict")
        assert outcome.reason is None
        with outcome.sock:
            assert outcome.sock.getpeername() == ("127.0.0.1", port)
            assert not outcome.sock.getblocking()
            assert outcome.sock not in [key.fileobj for key in selector.get_map().values()]


@pytest.mark.network
@pytest.mark.points(1)
def test_connector_names_every_address_it_tried_when_all_fail(selector):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    outcome = Outcome()
    net.Connector(selector, "chat.test", port, outcome.connected, outcome.failed,
                  resolve=resolver("127.0.0.2", "127.0.0.3"))
    run_loop_until(selector, outcome.known, "the connector's verdict")
    assert outcome.sock is None
    assert outcome.reason == (f"tried 127.0.0.2:{port} (Connection refused), "
                              f"127.0.0.3:{port} (Connection refused)")
    assert len(selector.get_map()) == 0


@pytest.mark.network
@pytest.mark.points(1)
def test_connector_with_one_address_reports_just_its_error(selector):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    outcome = Outcome()
    net.Connector(selector, "127.0.0.1", port, outcome.connected, outcome.failed)
    run_loop_until(selector, outcome.known, "the connector's verdict")
    assert outcome.reason == "Connection refused"


@pytest.mark.points(1)
def test_connector_raises_at_once_when_the_name_does_not_resolve(selector):
    def no_such_name(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(OSError, match="Name or service not known"):
        net.Connector(selector, "nowhere.test", 5050, print, print, resolve=no_such_name)
    assert len(selector.get_map()) == 0


@pytest.mark.network
@pytest.mark.points(1)
def test_connector_cancel_closes_the_attempt_in_flight(selector):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        outcome = Outcome()
        connector = net.Connector(selector, "127.0.0.1", listener.getsockname()[1],
                                  outcome.connected, outcome.failed)
        attempt = connector.sock
        connector.cancel()
        assert attempt.fileno() == -1 and len(selector.get_map()) == 0
        assert not outcome.known()


# --- Acceptor: limits without a spin ----------------------------------------------------------

@pytest.mark.network
@pytest.mark.points(2)
def test_acceptor_closes_what_admit_refuses_and_notes_a_burst_once(selector):
    notes, taken = [], []
    with net.listening_socket("127.0.0.1", 0) as listener:
        net.Acceptor(selector, listener, lambda addr: "full" if addr[0] == "127.0.0.2" else None,
                     lambda sock, addr: taken.append(sock), notes.append)
        port = listener.getsockname()[1]
        refused = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS,
                                            source_address=("127.0.0.2", 0)) for _ in range(5)]
        welcome = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS)
        run_loop_until(selector, lambda: taken, "the welcome connection")
        for sock in refused:
            assert sock.recv(1) == b""   # closed at once, before a byte was spent on it
            sock.close()
        welcome.close()
        for sock in taken:
            sock.close()
    assert len(taken) == 1
    assert len(notes) == 1 and notes[0].startswith("refused a connection from 127.0.0.2:")
    assert notes[0].endswith(": full")


def connection_pair(selector):
    """A server's Connection over one end of a socketpair, and the client's end."""
    server_end, client_end = socket.socketpair()
    server_end.setblocking(False)
    conn = net.Connection(server_end, SecureSession.server(PSK, SERVER_KEY), "peer:1", "peer")
    selector.register(server_end, selectors.EVENT_READ, None)
    return conn, client_end


@pytest.mark.points(1)
def test_a_connection_says_when_its_peer_closed_in_the_middle_of_a_record(selector):
    conn, client_end = connection_pair(selector)
    client_end.sendall(b"\x00\x30" + b"half")   # a record of 48 bytes, 4 of them sent
    client_end.close()
    assert conn.read() == [] and conn.phase is net.Phase.HANDSHAKE
    with pytest.raises(ProtocolError, match="^closed the connection in the middle of a record$"):
        conn.read()
    conn.close(selector)


@pytest.mark.linux_only("unread data after a reset")
@pytest.mark.points(1)
def test_what_a_peer_said_before_it_closed_is_read_even_after_a_send_to_it_fails(selector):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    with ours:
        ours.setblocking(False)
        selector.register(ours, selectors.EVENT_READ)
        theirs.sendall(b"goodbye")   # its last words, then it is gone
        theirs.close()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not ours.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):   # its reset, for bytes it will not read
            assert time.monotonic() < deadline, "no reset came back from the closed peer"
            net.send_pending(selector, ours, bytearray(b"a line typed as it went"))
        outgoing = bytearray(b"one more")
        net.send_pending(selector, ours, outgoing)   # a broken pipe now: no error, nothing kept to send
        assert not outgoing and selector.get_key(ours).events == selectors.EVENT_READ
        assert ours.recv(100) == b"goodbye" and ours.recv(100) == b""   # the read path learns why


@pytest.mark.points(1)
def test_a_connection_that_stops_reading_is_refused_past_its_limit(selector):
    conn, client_end = connection_pair(selector)   # the client never reads
    with pytest.raises(OSError, match=r"^stopped reading: dropped with \d+ bytes unsent \(the limit is 65536\)$"):
        for _ in range(10_000):   # far more than the kernel's buffers take
            conn.session.outgoing += b"x" * 4096
            conn.flush(selector, max_unsent=65536)
    assert not conn.session.outgoing   # nothing kept for a peer that will not read it
    conn.close(selector)
    client_end.close()


@pytest.mark.network
@pytest.mark.points(2)
def test_a_room_receiver_has_a_larger_buffer_than_the_default_and_is_read_dry_in_one_call():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        default_bytes = plain.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    receiver = net.broadcast_receiver(0)   # any free port: the buffer is what counts here
    assert receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > default_bytes
    port = receiver.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for number in range(300):   # more than a turn used to read; on loopback each is queued as sent
            sender.sendto(b"datagram %d" % number, ("127.0.0.1", port))
    first = net.read_datagrams(receiver, 100)
    rest = net.read_datagrams(receiver, 1000)
    receiver.close()
    assert [datagram for datagram, _source in first + rest] == [b"datagram %d" % n for n in range(300)]
    assert len(first) == 100


# --- The room's channel: broadcast, or multicast where loopback cannot broadcast ----------

def receive_skipping_probes(sock: socket.socket) -> tuple[bytes, tuple]:
    """The next datagram that is not a probe of open_room_channel, within the deadline."""
    sock.settimeout(DEADLINE_SECONDS)
    while True:
        datagram, source = sock.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
        if not datagram.startswith(net.PROBE_PREFIX):
            return datagram, source


@pytest.mark.network
@pytest.mark.points(2)
def test_where_loopback_broadcast_reaches_nobody_the_room_is_multicast_on_loopback_and_says_why(monkeypatch):
    # This machine's loopback broadcasts, so the probe of a broadcast is made to fail as on macOS;
    # the multicast probe and the datagram below are real (tests/test_lan.py has a real failing one).
    real_probe = net.hears_itself
    monkeypatch.setattr(net, "hears_itself", lambda channel, host: bool(channel.group) and real_probe(channel, host))
    port = free_port(socket.SOCK_DGRAM)
    channel = net.open_room_channel("127.0.0.1", "127.255.255.255", port, "")
    with channel.sock, net.multicast_receiver(channel.group, port, "127.0.0.1") as member:
        assert (channel.group, channel.address) == (net.LOOPBACK_GROUP, (net.LOOPBACK_GROUP, port))
        assert channel.choice == (
            f"the room is multicast to {net.LOOPBACK_GROUP}:{port} on loopback, not broadcast: a probe to "
            "127.255.255.255 reached no socket here (this system's loopback cannot broadcast); clients learn "
            "the group at login; a probe datagram reached 2 sockets bound to its port here")
        channel.sock.sendto(b"a room datagram", channel.address)
        assert receive_skipping_probes(member)[0] == b"a room datagram"


# --- Errors in the system's words, and port reuse, per platform ----------------------------

# What socket.errorTab says on Windows for the errors a connect meets (CPython's Lib/socket.py).
WINSOCK_WORDS = {10061: "Connection refused.", 10060: "The operation timed out.",
                 10065: "The host is unreachable.", 10040: "Message too long."}


@pytest.mark.points(1)
def test_winsock_error_numbers_are_named_in_words_not_unknown_error(monkeypatch):
    monkeypatch.setattr(socket, "errorTab", WINSOCK_WORDS, raising=False)
    assert net.error_text(10061) == "Connection refused"    # os.strerror would say "Unknown error"
    assert net.describe_error(OSError(10060, "")) == "The operation timed out"   # a number, no words
    assert net.describe_error(OSError(111, "Connection refused")) == "Connection refused"
    assert net.describe_error(OSError("stopped reading: dropped")) == "stopped reading: dropped"
    # A role catches (ProtocolError, OSError) together and shows either the same way.
    assert net.describe_error(ConnectionResetError(104, "Connection reset by peer")) == "Connection reset by peer"
    assert net.describe_error(ProtocolError("a bad record")) == "a bad record"
    monkeypatch.delattr(socket, "errorTab")   # Linux and macOS: the C library's words
    assert net.error_text(errno.ECONNREFUSED) == os.strerror(errno.ECONNREFUSED)


@pytest.mark.network
@pytest.mark.points(1)
def test_a_probe_heard_by_one_socket_of_two_is_no_broadcast():
    # 127.0.0.1 is a unicast address: the kernel hands the probe to one of the sockets sharing the port.
    port = free_port(socket.SOCK_DGRAM)
    channel = net.open_room_channel("127.0.0.1", "127.0.0.1", port, "")
    channel.sock.close()
    assert channel.group == "" and channel.choice.startswith(
        f"warning: the room is broadcast to 127.0.0.1:{port}, but a probe datagram did not reach 2 sockets")


@pytest.mark.points(1)
def test_own_addresses_are_those_a_socket_can_bind():
    assert net.is_own_address("127.0.0.1")
    assert not net.is_own_address("192.0.2.1")   # TEST-NET-1 (RFC 5737): no machine has it


def test_a_refused_connect_is_named_in_winsock_words_when_the_number_is_winsock(selector, monkeypatch):
    # The Connector reads SO_ERROR's number and words it itself: with Windows'
    # number and table, the words must come from the table.
    monkeypatch.setattr(socket, "errorTab", WINSOCK_WORDS, raising=False)
    monkeypatch.setattr(net.os, "strerror", lambda number: "Unknown error")   # as Windows' C library says
    real_getsockopt = socket.socket.getsockopt

    def winsock_getsockopt(sock, level, option, *args):
        value = real_getsockopt(sock, level, option, *args)
        return 10061 if (level, option, value) == (socket.SOL_SOCKET, socket.SO_ERROR, errno.ECONNREFUSED) else value

    monkeypatch.setattr(socket.socket, "getsockopt", winsock_getsockopt)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    outcome = Outcome()
    net.Connector(selector, "127.0.0.1", port, outcome.connected, outcome.failed)
    run_loop_until(selector, outcome.known, "the connector's verdict")
    assert outcome.reason == "Connection refused"


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("on_windows", [False, True])
def test_a_restarted_server_binds_its_port_while_old_connections_linger(monkeypatch, on_windows):
    monkeypatch.setattr(net, "ON_WINDOWS", on_windows)
    listener = net.listening_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    # SO_REUSEADDR on Linux and macOS; nothing at all on Windows, where it would
    # let a second live server take the port (and SO_EXCLUSIVEADDRUSE would keep
    # the port from a restarted server while old connections linger).
    assert bool(listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)) is not on_windows
    client = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS)
    listener.setblocking(True)
    listener.settimeout(DEADLINE_SECONDS)
    accepted, _ = listener.accept()
    accepted.close()        # the server closes first: its end lingers in TIME_WAIT
    client.settimeout(DEADLINE_SECONDS)
    assert client.recv(1) == b""
    client.close()
    listener.close()
    if on_windows:
        return   # Linux refuses a bind next to TIME_WAIT without SO_REUSEADDR; Windows does not
    with net.listening_socket("127.0.0.1", port) as restarted:
        assert restarted.getsockname()[1] == port


@pytest.mark.network
@pytest.mark.points(1)
def test_an_oversize_datagram_is_read_whole_never_cut_nor_raised():
    with net.broadcast_receiver(0) as receiver, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        receiver.setblocking(True)
        receiver.settimeout(DEADLINE_SECONDS)
        oversize = bytes(60_000)   # 50 times a valid room datagram
        sender.sendto(oversize, ("127.0.0.1", receiver.getsockname()[1]))
        datagram, source = receiver.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
        assert source == ("127.0.0.1", sender.getsockname()[1])
    assert datagram == oversize    # whole: its size check rejects it, with its source known
