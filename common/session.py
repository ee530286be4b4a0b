"""One end of an encrypted TCP session, without the socket.

Bytes from the network go in through ``receive()``; the messages they carry
come out. Messages to send go in through ``send()``; the bytes to write
collect in ``outgoing``, which the role file flushes when the socket is
writable. The session runs in two phases:

A session that failed (a bad record, a wrong key) refuses every further
call, as ``noise.HandshakeState`` does: its keys may be out of step, and
nothing it would decrypt could be trusted. What it authenticated *before*
the bad record was genuine, though, and TCP may well have delivered both in
one read: ``receive()`` then raises ``BadRecord`` carrying those messages,
and the caller handles them before it closes. Whether a genuine message
counts must not depend on how the network cut the byte stream.

1. Handshake: two records of Noise NKpsk0 (``-> psk, e, es`` then
   ``<- e, ee``). The client proves it knows the pre-shared key, and only
   the real server, holding the private half of the pinned public key, can
   answer. A wrong key on either side fails right here.
2. Transport: every record is one message, encrypted with the key of its
   direction. The record's length prefix is authenticated as associated
   data, and the implicit counter nonce makes a replayed, dropped or
   reordered record fail to decrypt.

With the wire view on (common/wire.py), every record is also shown, one
line each, as it is queued or as it arrives: a handshake record as its step,
any other with the message it carries.
"""
from __future__ import annotations

from common import keylog, noise, wire
from common.admission import RecentHandshakes
from common.errors import ProtocolError
from common.framing import MAX_RECORD_BYTES, RecordDecoder, encode_record
from common.messages import Goodbye, Message, decode, encode

# Both ends mix this into the handshake, so a peer speaking another protocol
# (or another version of this one) fails the handshake instead of misreading us.
PROLOGUE = b"chat-lab-kit/1"
# What each handshake record carries, as the wire view names it (common/wire.py).
HANDSHAKE_STEPS = ("handshake 1/2: psk, e, es", "handshake 2/2: e, ee")


class BadRecord(ProtocolError):
    """A record failed to open (or the handshake failed). ``delivered`` holds the
    messages of the genuine records that came before it in the same bytes, in
    order: handle them, then close the connection."""

    def __init__(self, reason: str, delivered: list[Message]) -> None:
        super().__init__(reason)
        self.delivered = delivered


class SecureSession:
    """A sans-IO encrypted session: handshake first, then messages."""

    def __init__(self, handshake: noise.HandshakeState, initiator: bool, peer: str = "",
                 recent: RecentHandshakes | None = None) -> None:
        self.peer = peer or ("server" if initiator else "client")   # the other end, for the wire view
        self._handshake: noise.HandshakeState | None = handshake
        self._initiator = initiator
        self._decoder = RecordDecoder()
        self._send_cipher: noise.CipherState | None = None
        self._receive_cipher: noise.CipherState | None = None
        self._failure: str | None = None      # why the session failed, once it has
        self.closed = False
        self.outgoing = bytearray()
        self._initiator_ephemeral = b""        # names the session in a key log (common/keylog.py)
        self._recent = recent                  # a server's memory of first records: no replays
        if initiator:
            first = handshake.write_message()
            self._initiator_ephemeral = first[:noise.KEY_BYTES]
            self._queue(encode_record(first), HANDSHAKE_STEPS[0])

    @classmethod
    def client(cls, psk: bytes, server_public_key: bytes, peer: str = "") -> SecureSession:
        """The connecting side. Its first handshake record is already in ``outgoing``.
        ``peer`` names the server in the wire view (common/wire.py)."""
        return cls(noise.initiator(psk, server_public_key, PROLOGUE), initiator=True, peer=peer)

    @classmethod
    def server(cls, psk: bytes, server_private_key: bytes, peer: str = "",
               recent: RecentHandshakes | None = None) -> SecureSession:
        """The accepting side: it waits for the client's first record.
        ``peer`` names the client in the wire view (common/wire.py). With
        ``recent`` (the server's Doorway.handshakes), a first record that
        began a handshake before is refused, before any key exchange."""
        return cls(noise.responder(psk, server_private_key, PROLOGUE), initiator=False, peer=peer, recent=recent)

    @property
    def established(self) -> bool:
        """True once the handshake is over and messages can flow."""
        return self._handshake is None

    @property
    def in_the_middle_of_a_record(self) -> bool:
        """True if part of a record has arrived and the rest has not."""
        return self._decoder.pending_bytes > 0

    def receive(self, data: bytes) -> list[Message]:
        """Feed bytes from the socket; return the messages they complete.

        Raises BadRecord (a ProtocolError) on a bad record, a failed handshake
        (wrong key) or a message that does not decode; its ``delivered`` are the
        messages of the records before it. The session is then unusable: the
        caller handles those, then closes the connection.
        """
        self._refuse_if_failed()
        messages = []
        try:
            for body in self._decoder.feed(data):
                if self._handshake is not None:
                    if wire.tap is not None:   # the wire view is on: show it before it is checked
                        wire.tap.record(wire.RECEIVED_RECORD, self.peer, encode_record(body),
                                        HANDSHAKE_STEPS[self._initiator])
                    self._continue_handshake(body)
                else:
                    messages.append(self._open(body))
                    if wire.tap is not None:
                        wire.tap.record(wire.RECEIVED_RECORD, self.peer, encode_record(body), messages[-1])
        except ProtocolError as error:
            self._failure = str(error)
            raise BadRecord(str(error), messages) from None
        return messages

    def send(self, message: Message) -> None:
        """Encrypt ``message`` and queue its record in ``outgoing``."""
        self._refuse_if_failed()
        if self._send_cipher is None:
            raise ProtocolError("cannot send before the handshake is complete")
        plaintext = encode(message)
        length = len(plaintext) + noise.TAG_BYTES
        if length > MAX_RECORD_BYTES:
            raise ProtocolError(f"{type(message).__name__} is too long for one record")
        header = length.to_bytes(2, "big")
        self._queue(header + self._send_cipher.encrypt(plaintext, ad=header), message)

    def close(self, reason: str) -> None:
        """End the session: queue ``Goodbye(reason)`` in ``outgoing`` if the peer
        can still read it (the handshake is done and nothing failed), then
        refuse further use. Closing twice is the same as once."""
        if self.established and not self.closed and self._failure is None:
            self.send(Goodbye(reason))
        self.closed = True

    def why_the_server_closed(self, logged_in: bool) -> str:
        """What a client tells its user when the server closed the connection
        (an empty recv()), worded the same in both labs."""
        if not self.established:
            # The server checks our first record; with a wrong key it cannot decrypt
            # it and hangs up without a word: it has no key to say it with.
            return ("the server closed the connection during the handshake: the pre-shared "
                    "key or the server's public key does not match, or the server refuses "
                    "your address (too many connections from it, or banned)")
        if not logged_in:
            return "the server closed the connection before the login was answered"
        return "the server closed the connection"

    def _refuse_if_failed(self) -> None:
        if self._failure is not None:
            raise ProtocolError(f"this session failed earlier ({self._failure}) and cannot be used")
        if self.closed:
            raise ProtocolError("this session is closed")

    def _continue_handshake(self, body: bytes) -> None:
        handshake = self._handshake
        ephemeral = body[:noise.KEY_BYTES]   # the server reads the client's "e" of record 1 in clear
        if not self._initiator and self._recent is not None:
            refusal = self._recent.refusal(ephemeral)   # checked before the costly Diffie-Hellman
            if refusal is not None:
                raise ProtocolError(refusal)
        handshake.read_message(body)   # a wrong key fails here, with a ProtocolError that says so
        if not self._initiator:
            self._initiator_ephemeral = ephemeral
            if self._recent is not None:   # proved genuine: a copy of it is a replay from now on
                self._recent.remember(ephemeral)
            self._queue(encode_record(handshake.write_message()), HANDSHAKE_STEPS[1])
        if handshake.complete:
            self._send_cipher, self._receive_cipher = handshake.split()
            keylog.export_session(self._initiator_ephemeral, *handshake.transport_keys())
            self._handshake = None

    def _queue(self, record: bytes, content: Message | str) -> None:
        self.outgoing += record
        if wire.tap is not None:   # the wire view is on (common/wire.py)
            wire.tap.record(wire.SENT_RECORD, self.peer, record, content)

    def _open(self, body: bytes) -> Message:
        header = len(body).to_bytes(2, "big")
        return decode(self._receive_cipher.decrypt(body, ad=header))
