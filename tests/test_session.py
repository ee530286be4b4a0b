"""The encrypted TCP session, without sockets: handshake, records, tampering."""
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import noise
from common.admission import RecentHandshakes
from common.errors import ProtocolError
from common.messages import ChatMessage, Goodbye, Login, Say
from common.session import BadRecord, SecureSession

SERVER_PRIVATE, SERVER_PUBLIC = noise.generate_keypair()
PSK = os.urandom(32)


def shuttle(sender: SecureSession, receiver: SecureSession) -> list:
    """Move everything ``sender`` has queued into ``receiver``."""
    data = bytes(sender.outgoing)
    sender.outgoing.clear()
    return receiver.receive(data)


def connected_pair(psk=PSK, server_public=SERVER_PUBLIC):
    client = SecureSession.client(psk, server_public)
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    assert shuttle(client, server) == []
    assert shuttle(server, client) == []
    return client, server


@pytest.mark.points(2)
def test_handshake_then_messages_flow_both_ways():
    client, server = connected_pair()
    assert client.established and server.established
    client.send(Login("alice", "pw"))
    assert shuttle(client, server) == [Login("alice", "pw")]
    server.send(ChatMessage("server", "hi alice"))
    assert shuttle(server, client) == [ChatMessage("server", "hi alice")]


@pytest.mark.points(2)
def test_no_plaintext_appears_on_the_wire():
    client, server = connected_pair()
    client.send(ChatMessage("alice", "the secret word is swordfish"))
    assert b"swordfish" not in client.outgoing and b"alice" not in client.outgoing


@pytest.mark.points(2)
def test_a_replayed_first_handshake_record_is_refused_before_any_key_exchange(monkeypatch):
    recent = RecentHandshakes(lambda: 0.0, window_seconds=5, max_remembered=100)
    client = SecureSession.client(PSK, SERVER_PUBLIC)
    first_record = bytes(client.outgoing)   # what an eavesdropper sniffs
    genuine = SecureSession.server(PSK, SERVER_PRIVATE, recent=recent)
    genuine.receive(first_record)
    assert genuine.established and genuine.outgoing   # answered: handshake record 2
    exchanges = []
    real_exchange = noise.HandshakeState._diffie_hellman
    monkeypatch.setattr(noise.HandshakeState, "_diffie_hellman",
                        lambda self, token: exchanges.append(token) or real_exchange(self, token))
    replayed = SecureSession.server(PSK, SERVER_PRIVATE, recent=recent)
    with pytest.raises(BadRecord, match="replayed"):
        replayed.receive(first_record)
    assert exchanges == [] and not replayed.outgoing   # no Diffie-Hellman, no answer
    fresh = SecureSession.server(PSK, SERVER_PRIVATE, recent=recent)   # a new client still gets in
    fresh.receive(bytes(SecureSession.client(PSK, SERVER_PUBLIC).outgoing))
    assert fresh.established and exchanges


@pytest.mark.points(2)
def test_wrong_psk_fails_the_handshake_on_the_server():
    client = SecureSession.client(os.urandom(32), SERVER_PUBLIC)
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    with pytest.raises(ProtocolError, match="does not match"):
        shuttle(client, server)
    assert not server.outgoing     # the server answers nothing to an impostor


@pytest.mark.points(2)
def test_wrong_pinned_server_key_fails_the_handshake():
    _, other_public = noise.generate_keypair()
    client = SecureSession.client(PSK, other_public)
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    with pytest.raises(ProtocolError):
        shuttle(client, server)


@pytest.mark.points(2)
def test_every_bit_flip_of_a_record_is_rejected():
    client, server = connected_pair()
    client.send(ChatMessage("alice", "hello"))
    record_bits = len(client.outgoing) * 8
    for bit in range(16, record_bits):        # the body; a flipped length is tested below
        client, server = connected_pair()      # fresh keys: each flip meets an unused counter
        client.send(ChatMessage("alice", "hello"))
        wire = bytearray(client.outgoing)
        wire[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProtocolError):
            server.receive(bytes(wire))


@pytest.mark.points(1)
def test_a_flipped_length_never_yields_a_message():
    for bit in range(16):
        client, server = connected_pair()
        client.send(ChatMessage("alice", "hello"))
        wire = bytearray(client.outgoing)
        wire[bit // 8] ^= 1 << (bit % 8)
        try:
            assert server.receive(bytes(wire)) == []    # waits for bytes that never come ...
        except ProtocolError:
            pass                                        # ... or is refused at once


@pytest.mark.points(2)
def test_replayed_and_reordered_records_are_rejected():
    client, server = connected_pair()
    client.send(ChatMessage("alice", "one"))
    first = bytes(client.outgoing)
    client.outgoing.clear()
    client.send(ChatMessage("alice", "two"))
    assert server.receive(first) == [ChatMessage("alice", "one")]
    with pytest.raises(ProtocolError):
        server.receive(first)                           # replay

    client, server = connected_pair()
    client.send(ChatMessage("alice", "one"))
    first = bytes(client.outgoing)
    client.outgoing.clear()
    client.send(ChatMessage("alice", "two"))
    second = bytes(client.outgoing)
    with pytest.raises(ProtocolError):
        server.receive(second)                          # reordered: second before first


@pytest.mark.points(1)
def test_sending_before_the_handshake_is_refused():
    client = SecureSession.client(PSK, SERVER_PUBLIC)
    with pytest.raises(ProtocolError, match="handshake"):
        client.send(ChatMessage("alice", "too early"))


@pytest.mark.points(2)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_random_bytes_into_a_session_raise_only_protocol_error(chunks):
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    try:
        for chunk in chunks:
            server.receive(chunk)
    except ProtocolError:
        pass  # the only error a session may raise


@pytest.mark.points(2)
@given(st.data())
def test_mutated_records_after_the_handshake_raise_only_protocol_error(data):
    client, server = connected_pair()
    client.send(ChatMessage("alice", data.draw(st.text(max_size=50))))
    wire = bytearray(client.outgoing)
    for _ in range(data.draw(st.integers(1, 3))):
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    try:
        server.receive(bytes(wire[:cut]))
        server.receive(bytes(wire[cut:]))
    except ProtocolError:
        pass  # rejected cleanly


@pytest.mark.points(2)
def test_a_failed_session_refuses_every_further_use():
    client, server = connected_pair()
    client.send(Say("hello"))
    record = bytearray(client.outgoing)
    record[-1] ^= 1                                   # tampered
    with pytest.raises(ProtocolError):
        server.receive(bytes(record))
    with pytest.raises(ProtocolError, match="failed earlier"):
        server.receive(b"")
    with pytest.raises(ProtocolError, match="failed earlier"):
        server.send(Say("anything"))
    server.close("bye")                               # nothing can be said on a broken session
    assert not server.outgoing


@pytest.mark.points(1)
def test_closing_says_goodbye_only_once_the_handshake_is_done():
    early = SecureSession.client(PSK, SERVER_PUBLIC)
    before = bytes(early.outgoing)
    early.close("quit")
    assert bytes(early.outgoing) == before            # the first handshake record, nothing more
    client, server = connected_pair()
    client.close("quit")
    client.close("quit again")
    assert server.receive(bytes(client.outgoing)) == [Goodbye("quit")]
    with pytest.raises(ProtocolError, match="closed"):
        client.send(Say("after the end"))


@pytest.mark.points(1)
def test_login_records_have_the_lengths_the_protocol_document_predicts():
    # Lab 1, task 1: 2 length bytes + 48 (an ephemeral key and a tag) for each handshake
    # record; then 2 + 1 type byte + (2 + 5) + (2 + 14) + 16 (the tag) for the Login.
    client = SecureSession.client(PSK, SERVER_PUBLIC)
    server = SecureSession.server(PSK, SERVER_PRIVATE)
    first = bytes(client.outgoing)
    shuttle(client, server)
    second = bytes(server.outgoing)
    shuttle(server, client)
    client.send(Login("alice", "correct horse!"))
    assert [len(first), len(second), len(client.outgoing)] == [2 + 48, 2 + 48, 2 + 1 + 7 + 16 + 16]


@pytest.mark.points(2)
def test_a_genuine_record_read_together_with_a_bad_one_is_still_delivered():
    client, server = connected_pair()
    client.send(Say("genuine"))
    client.send(Say("tampered"))
    chunk = bytearray(client.outgoing)              # both records in one read, as TCP may deliver them
    chunk[-1] ^= 1                                  # the second one's tag
    with pytest.raises(BadRecord) as failure:
        server.receive(bytes(chunk))
    assert failure.value.delivered == [Say("genuine")]
    assert isinstance(failure.value, ProtocolError) and "tampered" not in str(failure.value)
    with pytest.raises(ProtocolError, match="failed earlier"):
        server.receive(b"")
