"""Framing: TCP records and sealed room datagrams.

TCP is a byte stream with no message boundaries, so every record carries its
own length in front::

    record   = length (u16 big-endian) || body            (length >= 1)

UDP keeps boundaries, so a room datagram is one self-contained packet, never
buffered across datagrams::

    datagram = header || ciphertext || signature
    header   = version (u8 = 1) || epoch (u32) || packet_number (u64)
    ciphertext = ChaCha20-Poly1305(room key of epoch, nonce = 0x00000000 ||
                 packet_number as u64 little-endian, plaintext, ad = header)
    signature  = Ed25519(server signing key, header || ciphertext)

The room key keeps non-members out; the signature stops a member, who knows
the room key, from forging server events. The packet number is checked
against a sliding window so a replayed datagram is dropped.
"""
from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from common import keylog, wire
from common.errors import ProtocolError
from common.noise import TAG_BYTES  # ChaCha20-Poly1305's tag, in records and datagrams alike

LENGTH_BYTES = 2
MAX_RECORD_BYTES = 16384        # checked as soon as the 2 length bytes are in
MAX_DATAGRAM_BYTES = 1200       # stays under every path's MTU: no IP fragmentation
DATAGRAM_VERSION = 1
DATAGRAM_HEADER = struct.Struct(">BIQ")   # version, epoch, packet number: in clear
SIGNATURE_BYTES = 64
DATAGRAM_OVERHEAD_BYTES = DATAGRAM_HEADER.size + TAG_BYTES + SIGNATURE_BYTES
MAX_DATAGRAM_PLAINTEXT_BYTES = MAX_DATAGRAM_BYTES - DATAGRAM_OVERHEAD_BYTES
_U16 = struct.Struct(">H")


# --- TCP records ------------------------------------------------------------------

def encode_record(body: bytes) -> bytes:
    """Put the length in front of ``body``. Raises ProtocolError if the body
    is empty or longer than MAX_RECORD_BYTES."""
    if not 1 <= len(body) <= MAX_RECORD_BYTES:
        raise ProtocolError(f"a record body must be 1 to {MAX_RECORD_BYTES} bytes, not {len(body)}")
    return _U16.pack(len(body)) + body


class RecordDecoder:
    """Buffer TCP bytes; return each record body once all of it has arrived."""

    def __init__(self, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.max_record_bytes = max_record_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return the whole record bodies it completes, in order.

        recv() can return half a record, or two records at once: TCP keeps no
        message boundaries, so leftovers wait here for the next call. Raises
        ProtocolError on a length of 0 or over the maximum as soon as its two
        bytes are in: a hostile length cannot make us wait for, or keep, more
        than the one recv() that carried it.
        """
        self._buffer += data
        bodies = []
        while len(self._buffer) >= LENGTH_BYTES:
            length = _U16.unpack_from(self._buffer)[0]
            if not 1 <= length <= self.max_record_bytes:
                raise ProtocolError(f"record length {length} is outside 1..{self.max_record_bytes}")
            if len(self._buffer) < LENGTH_BYTES + length:
                break
            bodies.append(bytes(self._buffer[LENGTH_BYTES:LENGTH_BYTES + length]))
            del self._buffer[:LENGTH_BYTES + length]
        return bodies

    @property
    def pending_bytes(self) -> int:
        """How many bytes of an unfinished record are waiting (0 between records)."""
        return len(self._buffer)


# --- Room datagrams ---------------------------------------------------------------

class ReplayWindow:
    """Which packet numbers have been seen, as a sliding bitmap (RFC 6479).

    Bit i of ``_bitmap`` says whether ``highest - i`` has been accepted. A
    number newer than ``highest`` slides the window forward; one older than
    the window is refused, because we can no longer tell if it is a replay.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.highest = -1
        self._bitmap = 0

    def is_fresh(self, number: int) -> bool:
        """True if ``number`` has not been accepted and is not too old to tell."""
        if number > self.highest:
            return True
        offset = self.highest - number
        return offset < self.size and not (self._bitmap >> offset) & 1

    def accept(self, number: int) -> None:
        """Mark ``number`` as seen. Call only after the packet proved authentic."""
        if number > self.highest:
            self._bitmap = (self._bitmap << (number - self.highest)) & ((1 << self.size) - 1)
            self.highest = number
        self._bitmap |= 1 << (self.highest - number)


class DatagramSealer:
    """The server's side: seal and sign room datagrams under the current key."""

    def __init__(self, signing_key: Ed25519PrivateKey | None = None) -> None:
        # By default a fresh signing key, for this run only: members get its public half at login.
        self._signing_key = signing_key or Ed25519PrivateKey.generate()
        self.signing_public_key = self._signing_key.public_key().public_bytes_raw()
        self._next_packet_number = 0
        self.epoch = 0
        self._aead: ChaCha20Poly1305 | None = None

    def set_room_key(self, epoch: int, key: bytes) -> None:
        """Seal from now on with ``key``, announced to members as ``epoch``.

        Packet numbers keep counting across epochs, so a nonce never repeats.
        """
        self.epoch, self._aead = epoch, ChaCha20Poly1305(key)
        keylog.export_room_key(epoch, key)

    def seal(self, plaintext: bytes) -> bytes:
        """Return one datagram carrying ``plaintext``. Raises ProtocolError if
        it would exceed MAX_DATAGRAM_BYTES or no room key is set."""
        if self._aead is None:
            raise ProtocolError("no room key yet")
        if len(plaintext) > MAX_DATAGRAM_PLAINTEXT_BYTES:
            raise ProtocolError(f"{len(plaintext)} bytes do not fit one datagram "
                                f"(at most {MAX_DATAGRAM_PLAINTEXT_BYTES})")
        header = DATAGRAM_HEADER.pack(DATAGRAM_VERSION, self.epoch, self._next_packet_number)
        ciphertext = self._aead.encrypt(datagram_nonce(self._next_packet_number), plaintext, header)
        self._next_packet_number += 1
        signed = header + ciphertext
        datagram = signed + self._signing_key.sign(signed)
        if wire.tap is not None:   # the wire view is on (common/wire.py)
            wire.tap.datagram_sent(datagram, plaintext)
        return datagram


class KeyNotYetHere(ProtocolError):
    """A datagram sealed with the room key of the epoch after the newest one we
    hold. The server hands a new key over TCP before it seals with it, but UDP may
    overtake TCP: the datagram may well be genuine, and be opened once the key is in."""


class DatagramOpener:
    """A member's side: check, decrypt and de-duplicate room datagrams.

    It keeps the keys of the current and the previous epoch, so datagrams
    still in flight when the key changes are not lost.
    """

    KEPT_EPOCHS = 2

    def __init__(self, signing_public_key: bytes) -> None:
        try:
            self._verify_key = Ed25519PublicKey.from_public_bytes(signing_public_key)
        except ValueError:
            raise ProtocolError("the server's signing key is not a valid Ed25519 key") from None
        self._keys: dict[int, ChaCha20Poly1305] = {}
        self.window = ReplayWindow()

    def add_room_key(self, epoch: int, key: bytes) -> None:
        """Learn the room key of ``epoch`` (handed over the TCP session)."""
        if len(key) != 32:
            raise ProtocolError("a room key is 32 bytes")
        self._keys[epoch] = ChaCha20Poly1305(key)
        keylog.export_room_key(epoch, key)
        for old in sorted(self._keys)[:-self.KEPT_EPOCHS]:
            del self._keys[old]

    def open(self, datagram: bytes) -> bytes:
        """Return the plaintext of an authentic, fresh datagram.

        Raises KeyNotYetHere for a datagram of the next epoch (its key is on its
        way), ProtocolError for anything else: too short or too long, an
        unknown version or epoch, a replayed packet number, a failed tag or
        a bad signature. Cheap checks come first; the signature (the costly
        one) is checked last, on datagrams that already proved they know the
        room key.
        """
        if not DATAGRAM_OVERHEAD_BYTES <= len(datagram) <= MAX_DATAGRAM_BYTES:
            raise ProtocolError(f"a room datagram is {DATAGRAM_OVERHEAD_BYTES} to "
                                f"{MAX_DATAGRAM_BYTES} bytes, not {len(datagram)}")
        version, epoch, number = DATAGRAM_HEADER.unpack_from(datagram)
        if version != DATAGRAM_VERSION:
            raise ProtocolError(f"unknown datagram version {version}")
        aead = self._keys.get(epoch)
        if aead is None and self._keys and epoch == max(self._keys) + 1:
            raise KeyNotYetHere(f"sealed with the room key of epoch {epoch}, which is still on its way")
        if aead is None:
            raise ProtocolError(f"no room key for epoch {epoch}")
        if not self.window.is_fresh(number):
            raise ProtocolError(f"packet {number} is a replay or too old")
        signed, signature = datagram[:-SIGNATURE_BYTES], datagram[-SIGNATURE_BYTES:]
        try:
            plaintext = aead.decrypt(datagram_nonce(number), signed[DATAGRAM_HEADER.size:],
                                     signed[:DATAGRAM_HEADER.size])
        except InvalidTag:
            raise ProtocolError("integrity check failed: bad tag, not sealed with the room key") from None
        try:
            self._verify_key.verify(signature, signed)
        except InvalidSignature:   # a member knows the room key, but only the server can sign
            raise ProtocolError("integrity check failed: bad signature, not the server's") from None
        self.window.accept(number)
        return plaintext


def datagram_nonce(packet_number: int) -> bytes:
    """ChaCha20-Poly1305's 96-bit nonce from a 64-bit counter, as Noise does it."""
    return b"\x00\x00\x00\x00" + packet_number.to_bytes(8, "little")
