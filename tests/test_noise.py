"""Tests for common/noise.py: published test vectors first, then every way a handshake must fail.

No sockets: each test passes bytes from one HandshakeState or CipherState to the other.
"""

import ast
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from common import noise
from common.errors import ProtocolError

VECTORS_PATH = Path(__file__).parent / "data" / "noise_25519_chachapoly_sha256.json"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))["vectors"]

PSK = bytes(range(32))
PROLOGUE = b"chat lab kit v1"


def _from_vector(vector: dict, role: str) -> noise.HandshakeState:
    """Build the "init" or "resp" side of a vector with its fixed keys."""

    def optional_bytes(field: str) -> bytes | None:
        value = vector.get(f"{role}_{field}")
        return bytes.fromhex(value) if value is not None else None

    # The vectors list PSKs because some patterns take several; ours take at most one.
    psks = vector.get(f"{role}_psks", [])
    return noise.HandshakeState(
        vector["protocol_name"].split("_")[1],
        role == "init",
        prologue=bytes.fromhex(vector[f"{role}_prologue"]),
        static_private=optional_bytes("static"),
        remote_static_public=optional_bytes("remote_static"),
        psk=bytes.fromhex(psks[0]) if psks else None,
        ephemeral_private=optional_bytes("ephemeral"),
    )


def _kit_pair(
    client_psk: bytes = PSK, pinned_key: bytes | None = None
) -> tuple[noise.HandshakeState, noise.HandshakeState]:
    """A fresh client and server for the kit's NKpsk0 handshake."""
    server_private, server_public = noise.generate_keypair()
    client = noise.initiator(client_psk, pinned_key or server_public, PROLOGUE)
    server = noise.responder(PSK, server_private, PROLOGUE)
    return client, server


def _handshake(client: noise.HandshakeState, server: noise.HandshakeState) -> None:
    server.read_message(client.write_message(b"hello"))
    client.read_message(server.write_message(b"welcome"))


def _flip_bit(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@pytest.mark.points(4)
@pytest.mark.parametrize("vector", VECTORS, ids=[vector["protocol_name"] for vector in VECTORS])
def test_noise_vectors_match_byte_for_byte(vector: dict) -> None:
    initiator, responder = _from_vector(vector, "init"), _from_vector(vector, "resp")
    messages = [
        (bytes.fromhex(message["payload"]), bytes.fromhex(message["ciphertext"]))
        for message in vector["messages"]
    ]
    # Even-numbered messages go initiator -> responder, odd ones come back:
    # in the handshake, and after it with the transport ciphers.
    handshake_messages = 0
    while not initiator.complete:
        payload, ciphertext = messages[handshake_messages]
        if handshake_messages % 2 == 0:
            writer, reader = initiator, responder
        else:
            writer, reader = responder, initiator
        assert writer.write_message(payload) == ciphertext
        assert reader.read_message(ciphertext) == payload
        handshake_messages += 1
    assert responder.complete
    expected_hash = bytes.fromhex(vector["handshake_hash"])
    assert initiator.handshake_hash == responder.handshake_hash == expected_hash

    initiator_send, initiator_receive = initiator.split()
    responder_send, responder_receive = responder.split()
    for index in range(handshake_messages, len(messages)):
        payload, ciphertext = messages[index]
        if index % 2 == 0:
            sender, receiver = initiator_send, responder_receive
        else:
            sender, receiver = responder_send, initiator_receive
        assert sender.encrypt(payload) == ciphertext
        assert receiver.decrypt(ciphertext) == payload


@pytest.mark.points(2)
def test_kit_handshake_gives_both_sides_working_transport_ciphers() -> None:
    assert noise.PROTOCOL_NAME == "Noise_NKpsk0_25519_ChaChaPoly_SHA256"
    client, server = _kit_pair()
    first = client.write_message(b"hello")
    # psk, e, es: the ephemeral key, then the payload sealed with its tag.
    assert len(first) == noise.KEY_BYTES + len(b"hello") + noise.TAG_BYTES
    assert server.read_message(first) == b"hello"
    assert client.read_message(server.write_message(b"welcome")) == b"welcome"
    assert client.complete and server.complete
    assert client.handshake_hash == server.handshake_hash

    client_send, client_receive = client.split()
    server_send, server_receive = server.split()
    for text in (b"one", b"", b"three"):
        assert server_receive.decrypt(client_send.encrypt(text)) == text
        assert client_receive.decrypt(server_send.encrypt(text)) == text


@pytest.mark.points(1)
def test_public_key_of_matches_generate_keypair() -> None:
    private, public = noise.generate_keypair()
    assert len(private) == len(public) == noise.KEY_BYTES
    assert noise.public_key_of(private) == public


@pytest.mark.points(2)
def test_wrong_psk_is_rejected_by_the_server() -> None:
    client, server = _kit_pair(client_psk=bytes(32))
    with pytest.raises(ProtocolError, match="pre-shared key"):
        server.read_message(client.write_message(b"hello"))


@pytest.mark.points(2)
def test_wrong_pinned_server_key_is_rejected_by_the_server() -> None:
    _other_private, other_public = noise.generate_keypair()
    client, server = _kit_pair(pinned_key=other_public)
    with pytest.raises(ProtocolError, match="server's public key"):
        server.read_message(client.write_message(b"hello"))


@pytest.mark.points(1)
def test_different_prologue_is_rejected() -> None:
    server_private, server_public = noise.generate_keypair()
    client = noise.initiator(PSK, server_public, b"chat lab kit v2")
    server = noise.responder(PSK, server_private, PROLOGUE)
    with pytest.raises(ProtocolError):
        server.read_message(client.write_message())


@pytest.mark.points(1)
def test_all_zero_pinned_server_key_is_rejected() -> None:
    client = noise.initiator(PSK, bytes(32))
    with pytest.raises(ProtocolError, match="invalid"):
        client.write_message()


@pytest.mark.points(1)
def test_all_zero_ephemeral_key_from_client_is_rejected() -> None:
    client, server = _kit_pair()
    first = client.write_message()
    with pytest.raises(ProtocolError, match="invalid"):
        server.read_message(bytes(noise.KEY_BYTES) + first[noise.KEY_BYTES:])


@pytest.mark.points(2)
def test_every_bit_flip_in_the_first_message_is_rejected() -> None:
    server_private, server_public = noise.generate_keypair()
    first = noise.initiator(PSK, server_public, PROLOGUE).write_message(b"hi")
    for bit in range(len(first) * 8):
        server = noise.responder(PSK, server_private, PROLOGUE)
        with pytest.raises(ProtocolError):
            server.read_message(_flip_bit(first, bit))


@pytest.mark.points(1)
def test_truncated_or_extended_handshake_message_is_rejected() -> None:
    server_private, server_public = noise.generate_keypair()
    first = noise.initiator(PSK, server_public, PROLOGUE).write_message(b"hi")
    for length in range(len(first)):
        # Cut inside the ephemeral key: the message is too short to parse.
        # Cut later: the tag no longer matches, so it fails to authenticate.
        reason = "too short" if length < noise.KEY_BYTES else "did not authenticate"
        with pytest.raises(ProtocolError, match=reason):
            noise.responder(PSK, server_private, PROLOGUE).read_message(first[:length])
    with pytest.raises(ProtocolError):
        noise.responder(PSK, server_private, PROLOGUE).read_message(first + b"\0")


@pytest.mark.points(1)
def test_failed_handshake_cannot_be_continued() -> None:
    client, server = _kit_pair(client_psk=bytes(32))
    with pytest.raises(ProtocolError):
        server.read_message(client.write_message())
    with pytest.raises(ProtocolError, match="already failed"):
        server.write_message()


@pytest.mark.points(1)
def test_handshake_messages_out_of_turn_are_rejected() -> None:
    client, server = _kit_pair()
    with pytest.raises(ProtocolError, match="out of turn"):
        server.write_message()
    with pytest.raises(ProtocolError, match="out of turn"):
        client.read_message(bytes(64))
    first = client.write_message()
    with pytest.raises(ProtocolError, match="out of turn"):
        client.write_message()
    server.read_message(first)
    client.read_message(server.write_message())
    with pytest.raises(ProtocolError, match="complete"):
        client.write_message()
    with pytest.raises(ProtocolError, match="complete"):
        server.read_message(bytes(64))


@pytest.mark.points(1)
def test_split_and_handshake_hash_need_a_complete_handshake() -> None:
    client, _server = _kit_pair()
    with pytest.raises(ProtocolError):
        client.split()
    with pytest.raises(ProtocolError):
        _ = client.handshake_hash


@pytest.mark.points(2)
def test_tampered_transport_message_is_rejected_without_losing_step() -> None:
    client, server = _kit_pair()
    _handshake(client, server)
    client_send, _ = client.split()
    _, server_receive = server.split()
    ciphertext = client_send.encrypt(b"meet at noon", ad=b"header")
    for bit in range(len(ciphertext) * 8):
        with pytest.raises(ProtocolError):
            server_receive.decrypt(_flip_bit(ciphertext, bit), ad=b"header")
    with pytest.raises(ProtocolError):
        server_receive.decrypt(ciphertext, ad=b"other header")
    # The counter only advances on success, so the genuine message still opens.
    assert server_receive.decrypt(ciphertext, ad=b"header") == b"meet at noon"


@pytest.mark.points(2)
def test_replayed_or_reordered_transport_message_is_rejected() -> None:
    client, server = _kit_pair()
    _handshake(client, server)
    client_send, _ = client.split()
    _, server_receive = server.split()
    first, second = client_send.encrypt(b"first"), client_send.encrypt(b"second")
    with pytest.raises(ProtocolError):
        server_receive.decrypt(second)
    assert server_receive.decrypt(first) == b"first"
    with pytest.raises(ProtocolError):
        server_receive.decrypt(first)
    assert server_receive.decrypt(second) == b"second"


@pytest.mark.points(1)
def test_transport_nonce_counter_is_little_endian_after_four_zero_bytes() -> None:
    key = bytes(range(32))
    cipher = noise.CipherState(key)
    cipher.encrypt(b"zero")
    nonce_one = bytes(4) + (1).to_bytes(8, "little")
    expected = ChaCha20Poly1305(key).encrypt(nonce_one, b"one", b"ad")
    assert cipher.encrypt(b"one", ad=b"ad") == expected


@pytest.mark.points(1)
def test_exhausted_nonce_counter_is_rejected() -> None:
    cipher = noise.CipherState(bytes(32))
    # Sealing 2**64 - 1 real messages would take centuries, so jump the counter.
    cipher._nonce = 2**64 - 1
    with pytest.raises(ProtocolError, match="new handshake"):
        cipher.encrypt(b"one too many")


@pytest.mark.points(1)
def test_oversize_transport_message_is_rejected() -> None:
    cipher = noise.CipherState(bytes(32))
    largest_plaintext = noise.MAX_MESSAGE_BYTES - noise.TAG_BYTES
    assert len(cipher.encrypt(bytes(largest_plaintext))) == noise.MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError, match="exceed"):
        cipher.encrypt(bytes(largest_plaintext + 1))
    with pytest.raises(ProtocolError, match="exceed"):
        cipher.decrypt(bytes(noise.MAX_MESSAGE_BYTES + 1))


@pytest.mark.points(1)
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: noise.initiator(PSK[:31], bytes(range(32))), id="short psk"),
        pytest.param(lambda: noise.initiator(PSK, bytes(33)), id="long server public key"),
        pytest.param(lambda: noise.responder(b"", bytes(32)), id="empty psk"),
        pytest.param(lambda: noise.responder(PSK, bytes(16)), id="short server private key"),
        pytest.param(lambda: noise.initiator(PSK, bytes(32).hex()), id="hex text, not bytes"),
        pytest.param(lambda: noise.CipherState(b"short"), id="short cipher key"),
        pytest.param(lambda: noise.public_key_of(bytes(31)), id="short private key"),
    ],
)
def test_keys_of_wrong_length_are_rejected(make: Callable[[], object]) -> None:
    with pytest.raises(ProtocolError, match="32 raw bytes"):
        make()


@pytest.mark.points(1)
def test_missing_keys_and_unknown_patterns_are_rejected() -> None:
    with pytest.raises(ProtocolError, match="unknown handshake pattern"):
        noise.HandshakeState("XX", True)
    with pytest.raises(ProtocolError, match="pin"):
        noise.HandshakeState("NK", True)
    with pytest.raises(ProtocolError, match="static private key"):
        noise.HandshakeState("NK", False)
    with pytest.raises(ProtocolError, match="pre-shared key"):
        noise.HandshakeState("NNpsk0", True)


@pytest.mark.points(1)
def test_noise_module_does_no_io() -> None:
    source = Path(noise.__file__).read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"socket", "selectors", "tkinter"})
