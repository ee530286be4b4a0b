"""A packet capture of the loopback interface, for the tests' wire story.

While a black-box test runs, a thread reads every packet that crosses ``lo``
from a Linux AF_PACKET socket (the kernel's tap that tcpdump uses; it needs
CAP_NET_RAW, which root has), keeps the TCP and UDP packets to or from the
ports the test's programs use, and afterwards puts each TCP direction back
into the byte stream the program read, as the receiving kernel did:

* Loopback shows every packet twice, once leaving and once arriving; the
  address recvfrom() returns says which (its packet type), and only the
  arriving copy is kept.
* TCP numbers bytes, not packets: each direction starts at the sequence
  number after its SYN, a segment whose bytes were seen already is a
  retransmission and is dropped, and a segment from beyond a hole waits
  until the hole is filled.

Without the capability (not root, not Linux) ``Capture`` raises
CaptureUnavailable and the story says so in one line: a test never fails
for want of a capture.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003                   # every protocol, as <linux/if_ether.h> names it
PACKET_OUTGOING = 4                  # recvfrom's packet type for a packet this host sends
SO_RCVBUFFORCE = 33                  # <asm-generic/socket.h>; Python's socket module lacks it
TCP, UDP = 6, 17                     # IP protocol numbers
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
SEQUENCE_SPACE = 2**32
# Bounds on one test's capture: a test that moves more stops being recorded
# (its story says so), the beginning of each stream being what decodes.
MAX_PACKETS = 100_000
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
MAX_WAITING_SEGMENTS = 1000          # out-of-order segments held per direction
_RECEIVE_BUFFER_BYTES = 16 * 1024 * 1024
_POLL_SECONDS = 0.05
_DRAIN_SECONDS = 1.0


class CaptureUnavailable(Exception):
    """This process cannot capture packets (no CAP_NET_RAW, or not Linux)."""


@dataclass(frozen=True)
class Packet:
    """One TCP segment or UDP datagram; ``index`` is its place in the capture."""
    index: int
    protocol: int
    source: tuple[str, int]
    destination: tuple[str, int]
    payload: bytes
    sequence: int = 0
    flags: int = 0


def parse_ip_packet(data: bytes, index: int = 0) -> Packet | None:
    """The TCP or UDP packet in an IPv4 or IPv6 packet (no link-layer header),
    or None for anything else: other protocols, IPv4 fragments after the
    first, IPv6 extension headers (loopback traffic of the kit has none) or
    a packet cut short."""
    try:
        version = data[0] >> 4
        if version == 4:
            header_bytes = (data[0] & 0x0F) * 4
            total_bytes, fragment = struct.unpack_from(">H2xH", data, 2)
            if fragment & 0x1FFF:
                return None
            protocol = data[9]
            source_ip, destination_ip = (str(ipaddress.IPv4Address(data[at:at + 4])) for at in (12, 16))
            transport = data[header_bytes:total_bytes]
        elif version == 6:
            payload_bytes, protocol = struct.unpack_from(">HB", data, 4)
            source_ip, destination_ip = (str(ipaddress.IPv6Address(data[at:at + 16])) for at in (8, 24))
            transport = data[40:40 + payload_bytes]
        else:
            return None
        if protocol == TCP:
            source_port, destination_port, sequence, _ack, offset, flags = struct.unpack_from(">HHIIBB", transport)
            payload = transport[(offset >> 4) * 4:]
        elif protocol == UDP:
            source_port, destination_port, length = struct.unpack_from(">HHH", transport)
            payload, sequence, flags = transport[8:length], 0, 0
        else:
            return None
    except (IndexError, struct.error, ValueError):
        return None
    return Packet(index, protocol, (source_ip, source_port), (destination_ip, destination_port),
                  bytes(payload), sequence, flags)


class Capture:
    """Capture ``lo`` in a thread from now until stop(), keeping the packets
    to or from a port in ``ports`` (a test adds its ports as it learns them)."""

    def __init__(self, interface: str = "lo") -> None:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except (AttributeError, OSError) as error:
            raise CaptureUnavailable(f"needs CAP_NET_RAW on Linux ({error})") from None
        try:
            # A big queue: the test's programs go on sending while this thread waits for the GIL.
            # Past the system's rmem_max only with CAP_NET_ADMIN (SO_RCVBUFFORCE).
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RECEIVE_BUFFER_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
            sock.bind((interface, ETH_P_ALL))
            sock.settimeout(_POLL_SECONDS)
        except OSError as error:
            sock.close()
            raise CaptureUnavailable(f"cannot capture on {interface} ({error})") from None
        self.interface = interface
        self.ports: set[int] = set()
        self.packets: list[Packet] = []
        self.full = False                  # a bound was reached: later packets were not kept
        self._payload_bytes = 0
        self._seen = 0
        self._sock = sock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wire capture", daemon=True)
        self._thread.start()

    def stop(self) -> list[Packet]:
        """Read what the kernel has queued for us, stop, and return the packets."""
        if not self._stopping.is_set():
            self._stopping.set()
            self._thread.join()
            self._sock.close()
        return self.packets

    def _run(self) -> None:
        drain_until = None
        while True:
            if self._stopping.is_set() and drain_until is None:
                # Drain: whatever is queued, then stop; other programs' traffic
                # on lo must not keep us reading for ever.
                self._sock.setblocking(False)
                drain_until = time.monotonic() + _DRAIN_SECONDS
            try:
                data, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except BlockingIOError:
                return
            if drain_until is not None and time.monotonic() > drain_until:
                return
            if address[2] != PACKET_OUTGOING:
                self._keep(data)

    def _keep(self, data: bytes) -> None:
        self._seen += 1
        packet = parse_ip_packet(data, self._seen)
        # Lookups only: the test's threads add ports to the set while this one reads it.
        if packet is None or not (packet.source[1] in self.ports or packet.destination[1] in self.ports):
            return
        if len(self.packets) >= MAX_PACKETS or self._payload_bytes + len(packet.payload) > MAX_PAYLOAD_BYTES:
            self.full = True
            return
        self._payload_bytes += len(packet.payload)
        self.packets.append(packet)


# --- TCP streams, put back together ------------------------------------------------------------

@dataclass
class Direction:
    """One direction of a TCP connection: its bytes in order, each piece
    tagged with the index of the packet that completed it."""
    next_sequence: int | None = None
    pieces: list[tuple[int, bytes]] = field(default_factory=list)
    waiting: dict[int, bytes] = field(default_factory=dict)   # segments beyond a hole, by sequence number

    def add(self, packet: Packet) -> None:
        if packet.flags & SYN:
            self.next_sequence = (packet.sequence + 1) % SEQUENCE_SPACE   # a SYN takes one number
            return
        if not packet.payload:
            return
        if self.next_sequence is None:      # the connection began before the capture
            self.next_sequence = packet.sequence
        if len(self.waiting) < MAX_WAITING_SEGMENTS:
            self.waiting[packet.sequence] = packet.payload
        self._deliver(packet.index)

    def _deliver(self, index: int) -> None:
        progress = True
        while progress:
            progress = False
            for sequence in list(self.waiting):
                ahead = (sequence - self.next_sequence) % SEQUENCE_SPACE
                if ahead >= SEQUENCE_SPACE // 2:           # starts before what we have: a retransmission
                    seen = SEQUENCE_SPACE - ahead
                    data = self.waiting.pop(sequence)[seen:]
                    if data:
                        self.waiting[self.next_sequence] = data   # its new bytes, if any, go on
                    progress = True
                elif ahead == 0:
                    data = self.waiting.pop(sequence)
                    self.pieces.append((index, data))
                    self.next_sequence = (self.next_sequence + len(data)) % SEQUENCE_SPACE
                    progress = True

    @property
    def missing_bytes(self) -> bool:
        """True if a hole stayed unfilled (the capture lost a packet)."""
        return bool(self.waiting)


@dataclass
class Connection:
    """One TCP connection: ``client`` sent the SYN (or, if the capture began
    later, the first packet seen); ``ends`` lists (index, sender, 'FIN'/'RST')."""
    client: tuple[str, int]
    server: tuple[str, int]
    first_index: int
    opened: bool
    upstream: Direction = field(default_factory=Direction)      # client -> server
    downstream: Direction = field(default_factory=Direction)    # server -> client
    ends: list[tuple[int, tuple[str, int], str]] = field(default_factory=list)


def tcp_connections(packets: list[Packet]) -> list[Connection]:
    """Group TCP packets into connections and reassemble each direction."""
    connections: list[Connection] = []
    current: dict[tuple, Connection] = {}
    for packet in packets:
        if packet.protocol != TCP:
            continue
        key = tuple(sorted((packet.source, packet.destination)))
        connection = current.get(key)
        opening = packet.flags & SYN and not packet.flags & ACK
        if connection is None or (opening and connection.ends):   # a port pair used again
            connection = current[key] = Connection(packet.source, packet.destination, packet.index,
                                                   bool(opening))
            connections.append(connection)
        upstream = packet.source == connection.client
        (connection.upstream if upstream else connection.downstream).add(packet)
        for flag, name in ((FIN, "FIN"), (RST, "RST")):
            if packet.flags & flag:
                connection.ends.append((packet.index, packet.source, name))
    return connections
