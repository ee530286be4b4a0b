"""The Noise handshake that turns a TCP connection into a secure channel.

Theory of operation
-------------------
Noise (noiseprotocol.org, revision 34) builds a secure channel from X25519 key
agreement, the ChaCha20Poly1305 cipher and SHA-256. The kit runs one
handshake, ``Noise_NKpsk0_25519_ChaChaPoly_SHA256``::

    <- s                 known in advance: the client has the server's static key
    -> psk, e, es        client to server
    <- e, ee             server to client

Each token is one step. ``e`` sends a fresh ephemeral public key; ``es`` and
``ee`` mix in an X25519 shared secret (first letter: the initiator's key,
second: the responder's); ``psk`` mixes in the pre-shared key. Both sides keep
a chaining key and a hash of the transcript so far, and every payload is
encrypted under all of it, so any disagreement surfaces as a message that
fails to decrypt.

What this gives the chat:

* The client authenticates the server: it pins the server's static public
  key, and only the holder of the matching private key can compute ``es``.
* The PSK keeps non-members out: without it the server cannot decrypt the
  first message, so a stranger is dropped before any chat code runs.
* Forward secrecy: the transport keys come from ephemeral keys that are
  thrown away, so a stolen server key or PSK cannot decrypt recorded traffic.

It does not tell the server who the client is: the login that follows, inside
the encrypted channel, does that. NN, NK and their psk0/psk2 variants are here
too because the published test vectors exercise them. Sans-IO: the caller
sends what ``write_message`` returns and passes what it receives to
``read_message``. Every failure raises ``ProtocolError``.
"""

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from common.errors import ProtocolError

PROTOCOL_NAME = "Noise_NKpsk0_25519_ChaChaPoly_SHA256"
KEY_BYTES = 32  # X25519 keys and the PSK
TAG_BYTES = 16  # ChaCha20Poly1305 tag
MAX_MESSAGE_BYTES = 65535  # Noise's limit on one message

# Noise reserves the nonce 2**64 - 1, so one key seals at most that many messages.
_MAX_NONCE = 2**64 - 1

# One tuple of tokens per message: even-numbered messages go initiator ->
# responder, odd-numbered ones come back. A second letter "K" means the
# responder's static key is Known to the initiator in advance (the "<- s"
# pre-message), so no message has to carry it.
_MESSAGE_PATTERNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "NN": (("e",), ("e", "ee")),
    "NK": (("e", "es"), ("e", "ee")),
    "NNpsk0": (("psk", "e"), ("e", "ee")),
    "NNpsk2": (("e",), ("e", "ee", "psk")),
    "NKpsk0": (("psk", "e", "es"), ("e", "ee")),
    "NKpsk2": (("e", "es"), ("e", "ee", "psk")),
}


def _check_key(key: bytes, what: str) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ProtocolError(f"the {what} must be {KEY_BYTES} raw bytes (decode hex first)")
    return key


def _optional_key(key: bytes | None, what: str) -> bytes | None:
    return None if key is None else _check_key(key, what)


def _optional_private(key: bytes | None, what: str) -> X25519PrivateKey | None:
    return None if key is None else X25519PrivateKey.from_private_bytes(_check_key(key, what))


def _check_size(message_bytes: int) -> None:
    if message_bytes > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"a Noise message may not exceed {MAX_MESSAGE_BYTES} bytes")


def _hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    # Noise's HKDF (spec section 4.3): one HMAC-SHA256 extracts a temporary key
    # from the chaining key and the new secret; each output is then the HMAC of
    # the previous output followed by a counter byte.
    temporary_key = hmac.digest(chaining_key, input_key_material, "sha256")
    results = [b""]
    for counter in range(1, outputs + 1):
        results.append(hmac.digest(temporary_key, results[-1] + bytes([counter]), "sha256"))
    return results[1:]


class CipherState:
    """Transport cipher: ChaCha20Poly1305 with an implicit 64-bit counter nonce."""

    def __init__(self, key: bytes) -> None:
        """Take a 32-byte key; raise ProtocolError for any other length."""
        self._aead = ChaCha20Poly1305(_check_key(key, "cipher key"))
        # The nonce is never sent: both sides count messages. So Noise needs an
        # ordered, reliable transport such as TCP, and a replayed or dropped
        # message fails to decrypt because it meets the wrong count.
        self._nonce = 0

    def encrypt(self, plaintext: bytes, ad: bytes = b"") -> bytes:
        """Seal plaintext, authenticating ad too; ProtocolError if oversize or out of nonces."""
        _check_size(len(plaintext) + TAG_BYTES)
        ciphertext = self._aead.encrypt(self._current_nonce(), plaintext, ad)
        self._nonce += 1
        return ciphertext

    def decrypt(self, ciphertext: bytes, ad: bytes = b"") -> bytes:
        """Open the peer's next ciphertext; ProtocolError if altered, replayed or misordered."""
        _check_size(len(ciphertext))
        try:
            plaintext = self._aead.decrypt(self._current_nonce(), ciphertext, ad)
        except InvalidTag:
            raise ProtocolError(
                "message rejected: it was altered, replayed, reordered or sealed with another key"
            ) from None
        # Count only messages that passed: a forged one must not push the two
        # counters out of step and break the genuine messages after it.
        self._nonce += 1
        return plaintext

    def _current_nonce(self) -> bytes:
        if self._nonce >= _MAX_NONCE:
            raise ProtocolError("this key has sealed all the messages it may; run a new handshake")
        return bytes(4) + self._nonce.to_bytes(8, "little")


class HandshakeState:
    """One side of a Noise handshake; call write_message and read_message in turn."""

    def __init__(self, pattern: str, initiator: bool, *, prologue: bytes = b"",
                 static_private: bytes | None = None, remote_static_public: bytes | None = None,
                 psk: bytes | None = None, ephemeral_private: bytes | None = None) -> None:
        """Start a handshake as initiator (client) or responder (server).

        static_private is this side's long-term key, remote_static_public the
        peer's pinned key; the pattern decides which keys are needed.
        ephemeral_private only replays test vectors: normally each handshake
        draws a fresh one. Both sides must pass the same prologue, which binds
        outside context into the transcript. Raises ProtocolError for an
        unknown pattern or a missing or malformed key.
        """
        if pattern not in _MESSAGE_PATTERNS:
            known = ", ".join(_MESSAGE_PATTERNS)
            raise ProtocolError(f"unknown handshake pattern {pattern!r}; known: {known}")
        self._messages = _MESSAGE_PATTERNS[pattern]
        self._initiator = initiator
        self._static = _optional_private(static_private, "static private key")
        self._ephemeral = _optional_private(ephemeral_private, "ephemeral private key")
        self._remote_static = _optional_key(remote_static_public, "server public key")
        self._remote_ephemeral: bytes | None = None
        self._psk = _optional_key(psk, "pre-shared key")
        self._message_index = 0
        self._broken = False

        responder_static_known = pattern[1] == "K"
        if responder_static_known and initiator and self._remote_static is None:
            raise ProtocolError(f"{pattern}: the client must pin the server's public key")
        if responder_static_known and not initiator and self._static is None:
            raise ProtocolError(f"{pattern}: the server needs its static private key")
        if "psk" in pattern and self._psk is None:
            raise ProtocolError(f"{pattern}: both sides need the pre-shared key")

        # The protocol name starts the transcript, so two sides running
        # different protocols never agree. A name of up to 32 bytes is zero
        # padded; a longer one, like the kit's, is hashed.
        name = f"Noise_{pattern}_25519_ChaChaPoly_SHA256".encode()
        self._hash = name.ljust(32, b"\0") if len(name) <= 32 else hashlib.sha256(name).digest()
        self._chaining_key = self._hash
        self._cipher: CipherState | None = None  # no key until the first MixKey
        self._mix_hash(prologue)
        if responder_static_known:  # the "<- s" pre-message, mixed in on both sides
            server_public = self._remote_static if initiator else public_key_of(static_private)
            self._mix_hash(server_public)

    @property
    def complete(self) -> bool:
        """True once every handshake message has been written or read."""
        return self._message_index == len(self._messages)

    @property
    def handshake_hash(self) -> bytes:
        """The transcript hash, equal on both sides; ProtocolError before completion."""
        if not self.complete:
            raise ProtocolError("the handshake hash is not final until the handshake is complete")
        return self._hash

    def write_message(self, payload: bytes = b"") -> bytes:
        """Return our next handshake message, carrying payload (encrypted once a key exists).

        Raises ProtocolError out of turn, after the handshake, or for an invalid pinned key.
        """
        message = b""
        for token in self._begin_message(sending=True):
            if token == "e":
                if self._ephemeral is None:
                    self._ephemeral = X25519PrivateKey.generate()
                ephemeral_public = self._ephemeral.public_key().public_bytes_raw()
                message += ephemeral_public
                self._mix_ephemeral(ephemeral_public)
            elif token == "psk":
                self._mix_key_and_hash(self._psk)
            else:
                self._mix_key(self._diffie_hellman(token))
        message += self._encrypt_and_hash(payload)
        _check_size(len(message))
        self._end_message()
        return message

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's next handshake message and return its payload.

        Raises ProtocolError out of turn, after the handshake, or for a message
        that is truncated, carries an invalid key or fails to authenticate.
        """
        tokens = self._begin_message(sending=False)
        _check_size(len(message))
        for token in tokens:
            if token == "e":
                if len(message) < KEY_BYTES:
                    raise ProtocolError("handshake message too short: it ends inside a key")
                self._remote_ephemeral, message = message[:KEY_BYTES], message[KEY_BYTES:]
                self._mix_ephemeral(self._remote_ephemeral)
            elif token == "psk":
                self._mix_key_and_hash(self._psk)
            else:
                self._mix_key(self._diffie_hellman(token))
        payload = self._decrypt_and_hash(message)
        self._end_message()
        return payload

    def transport_keys(self) -> tuple[bytes, bytes]:
        """Return the raw (initiator-to-responder, responder-to-initiator) keys
        that split() makes its ciphers from: what a key log (common/keylog.py)
        records. ProtocolError if the handshake is incomplete."""
        if not self.complete:
            raise ProtocolError("the handshake is not complete, so there are no transport keys yet")
        initiator_to_responder, responder_to_initiator = _hkdf(self._chaining_key, b"", 2)
        return initiator_to_responder, responder_to_initiator

    def split(self) -> tuple[CipherState, CipherState]:
        """Return this side's (send, receive) transport ciphers; ProtocolError if incomplete."""
        initiator_to_responder, responder_to_initiator = self.transport_keys()
        if self._initiator:
            return CipherState(initiator_to_responder), CipherState(responder_to_initiator)
        return CipherState(responder_to_initiator), CipherState(initiator_to_responder)

    def _begin_message(self, sending: bool) -> tuple[str, ...]:
        if self._broken:
            raise ProtocolError("this handshake already failed; start a new one")
        if self.complete:
            raise ProtocolError("the handshake is complete; use split() for the transport ciphers")
        if sending != (self._initiator == (self._message_index % 2 == 0)):
            whose_turn = "the peer's turn to send" if sending else "our turn to send"
            raise ProtocolError(f"handshake message out of turn: it is {whose_turn}")
        # A step that raises leaves the transcript half updated, and such a
        # handshake can never succeed. So count it broken until _end_message()
        # shows that the whole message went through.
        self._broken = True
        return self._messages[self._message_index]

    def _end_message(self) -> None:
        self._broken = False
        self._message_index += 1

    def _mix_ephemeral(self, ephemeral_public: bytes) -> None:
        self._mix_hash(ephemeral_public)
        # With a PSK, a payload may be encrypted before any DH has happened.
        # Mixing in the fresh ephemeral key gives each handshake a new cipher
        # key, so the nonce counter never restarts under an old key.
        if self._psk is not None:
            self._mix_key(ephemeral_public)

    def _diffie_hellman(self, token: str) -> bytes:
        # Each side combines its own private key with the peer's public key;
        # X25519 makes both results equal, though no private key is ever sent.
        if token == "ee":
            private, public = self._ephemeral, self._remote_ephemeral
        elif self._initiator:  # "es": the initiator's ephemeral, the responder's static
            private, public = self._ephemeral, self._remote_static
        else:
            private, public = self._static, self._remote_ephemeral
        try:
            return private.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError:
            # cryptography refuses low-order points such as all zeros: they give
            # an all-zero shared secret, which an attacker knows as well.
            raise ProtocolError(
                "handshake failed: the peer's public key is invalid (a low-order point)"
            ) from None

    # The five steps below carry the spec's names (section 5.2: MixKey, MixHash,
    # MixKeyAndHash, EncryptAndHash, DecryptAndHash), to read side by side with it.

    def _mix_key(self, input_key_material: bytes) -> None:
        self._chaining_key, key = _hkdf(self._chaining_key, input_key_material, 2)
        self._cipher = CipherState(key)

    def _mix_hash(self, data: bytes) -> None:
        self._hash = hashlib.sha256(self._hash + data).digest()

    def _mix_key_and_hash(self, input_key_material: bytes) -> None:
        self._chaining_key, hash_input, key = _hkdf(self._chaining_key, input_key_material, 3)
        self._mix_hash(hash_input)
        self._cipher = CipherState(key)

    def _encrypt_and_hash(self, plaintext: bytes) -> bytes:
        # Before the first key exists (NN's first message) the payload travels
        # in the clear; either way the transcript hash covers it.
        ciphertext = self._cipher.encrypt(plaintext, ad=self._hash) if self._cipher else plaintext
        self._mix_hash(ciphertext)
        return ciphertext

    def _decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = ciphertext
        if self._cipher:
            try:
                plaintext = self._cipher.decrypt(ciphertext, ad=self._hash)
            except ProtocolError:
                raise ProtocolError(
                    "handshake failed: the message did not authenticate, so the pre-shared key "
                    "or the server's public key does not match (or the message was altered)"
                ) from None
        self._mix_hash(ciphertext)
        return plaintext


def initiator(psk: bytes, server_public_key: bytes, prologue: bytes = b"") -> HandshakeState:
    """Client side of the kit's NKpsk0 handshake; ProtocolError for a malformed key."""
    return HandshakeState("NKpsk0", True, prologue=prologue,
                          remote_static_public=server_public_key, psk=psk)


def responder(psk: bytes, server_private_key: bytes, prologue: bytes = b"") -> HandshakeState:
    """Server side of the kit's NKpsk0 handshake; ProtocolError for a malformed key."""
    return HandshakeState("NKpsk0", False, prologue=prologue,
                          static_private=server_private_key, psk=psk)


def generate_keypair() -> tuple[bytes, bytes]:
    """Return a fresh X25519 (private, public) key pair, 32 raw bytes each."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_of(private_key: bytes) -> bytes:
    """Return the public key of a 32-byte private key; ProtocolError for other lengths."""
    private = X25519PrivateKey.from_private_bytes(_check_key(private_key, "private key"))
    return private.public_key().public_bytes_raw()
