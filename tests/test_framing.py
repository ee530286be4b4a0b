"""TCP records and room datagrams: cut anywhere, tampered, replayed, oversize."""
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ProtocolError
from common.framing import (
    MAX_DATAGRAM_BYTES,
    MAX_DATAGRAM_PLAINTEXT_BYTES,
    MAX_RECORD_BYTES,
    DatagramOpener,
    DatagramSealer,
    RecordDecoder,
    ReplayWindow,
    encode_record,
)

BODIES = [b"a", b"hello", bytes(range(256)) * 3, b"x" * MAX_RECORD_BYTES]


@pytest.mark.points(2)
def test_records_arrive_whole_when_fed_one_byte_at_a_time():
    wire = b"".join(encode_record(body) for body in BODIES)
    decoder = RecordDecoder()
    received = []
    for i in range(len(wire)):
        received += decoder.feed(wire[i:i + 1])
    assert received == BODIES
    assert decoder.pending_bytes == 0


@pytest.mark.points(1)
def test_several_records_in_one_chunk_all_come_out_in_order():
    assert RecordDecoder().feed(b"".join(encode_record(body) for body in BODIES)) == BODIES


@pytest.mark.points(2)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.lists(st.integers(1, 50), max_size=40))
def test_records_survive_any_cut_of_the_stream(bodies, cuts):
    wire = b"".join(encode_record(body) for body in bodies)
    decoder, received, position = RecordDecoder(), [], 0
    for cut in cuts + [len(wire)]:
        received += decoder.feed(wire[position:position + cut])
        position += cut
    received += decoder.feed(wire[position:])
    assert received == bodies


@pytest.mark.points(2)
def test_oversize_length_is_refused_before_the_body_is_buffered():
    decoder = RecordDecoder(max_record_bytes=100)
    with pytest.raises(ProtocolError, match="outside"):
        decoder.feed((101).to_bytes(2, "big"))   # just the length: no body has arrived


@pytest.mark.points(1)
def test_zero_length_record_is_refused():
    with pytest.raises(ProtocolError):
        RecordDecoder().feed(b"\x00\x00")
    with pytest.raises(ProtocolError):
        encode_record(b"")


@pytest.mark.points(1)
@given(st.binary(max_size=500))
def test_random_bytes_into_the_record_decoder_raise_only_protocol_error(data):
    try:
        RecordDecoder(max_record_bytes=200).feed(data)
    except ProtocolError:
        pass  # the only error the decoder may raise


# --- datagrams ----------------------------------------------------------------------

def make_pair(epoch=1):
    signing_key = Ed25519PrivateKey.generate()
    room_key = os.urandom(32)
    sealer = DatagramSealer(signing_key)
    sealer.set_room_key(epoch, room_key)
    opener = DatagramOpener(signing_key.public_key().public_bytes_raw())
    opener.add_room_key(epoch, room_key)
    return sealer, opener


@pytest.mark.points(1)
def test_sealed_datagram_opens_to_the_same_plaintext():
    sealer, opener = make_pair()
    assert opener.open(sealer.seal(b"room event")) == b"room event"


@pytest.mark.points(2)
def test_every_datagram_stays_within_1200_bytes():
    sealer, opener = make_pair()
    biggest = sealer.seal(b"x" * MAX_DATAGRAM_PLAINTEXT_BYTES)
    assert len(biggest) == MAX_DATAGRAM_BYTES
    with pytest.raises(ProtocolError, match="do not fit"):
        sealer.seal(b"x" * (MAX_DATAGRAM_PLAINTEXT_BYTES + 1))
    with pytest.raises(ProtocolError):
        opener.open(biggest + b"!")


@pytest.mark.points(3)
def test_every_single_bit_flip_of_a_datagram_is_rejected():
    sealer, opener = make_pair()
    datagram = sealer.seal(b"a signed, sealed room event")
    for bit in range(len(datagram) * 8):
        flipped = bytearray(datagram)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ProtocolError):
            opener.open(bytes(flipped))
    assert opener.open(datagram) == b"a signed, sealed room event"   # the original still opens


@pytest.mark.points(2)
def test_replayed_datagram_is_rejected():
    sealer, opener = make_pair()
    datagram = sealer.seal(b"once")
    opener.open(datagram)
    with pytest.raises(ProtocolError, match="replay"):
        opener.open(datagram)


@pytest.mark.points(2)
def test_reordered_datagrams_are_accepted_once_each():
    sealer, opener = make_pair()
    datagrams = [sealer.seal(bytes([i])) for i in range(10)]
    order = [3, 0, 9, 1, 2, 8, 4, 7, 5, 6]
    assert [opener.open(datagrams[i]) for i in order] == [bytes([i]) for i in order]
    for i in order:
        with pytest.raises(ProtocolError):
            opener.open(datagrams[i])


@pytest.mark.points(2)
def test_a_member_who_knows_the_room_key_cannot_forge_a_server_datagram():
    room_key = os.urandom(32)
    _, opener = make_pair()
    opener.add_room_key(2, room_key)
    forger = DatagramSealer(Ed25519PrivateKey.generate())
    forger.set_room_key(2, room_key)            # the forger knows the room key ...
    with pytest.raises(ProtocolError, match="integrity"):
        opener.open(forger.seal(b"server: everyone is banned"))   # ... but not the signing key


@pytest.mark.points(1)
def test_datagram_under_an_unknown_epoch_is_rejected():
    sealer, opener = make_pair(epoch=1)
    sealer.set_room_key(5, os.urandom(32))
    with pytest.raises(ProtocolError, match="epoch 5"):
        opener.open(sealer.seal(b"x"))


@pytest.mark.points(1)
def test_previous_epoch_key_still_opens_datagrams_in_flight():
    sealer, opener = make_pair(epoch=1)
    in_flight = sealer.seal(b"old key")
    new_key = os.urandom(32)
    sealer.set_room_key(2, new_key)
    opener.add_room_key(2, new_key)
    assert opener.open(sealer.seal(b"new key")) == b"new key"
    assert opener.open(in_flight) == b"old key"


@pytest.mark.points(2)
@given(st.binary(max_size=1300))
def test_random_bytes_as_a_datagram_raise_only_protocol_error(data):
    _, opener = make_pair()
    with pytest.raises(ProtocolError):
        opener.open(data)


@pytest.mark.points(1)
def test_replay_window_forgets_numbers_too_old_to_judge():
    window = ReplayWindow(size=64)
    window.accept(1000)
    assert not window.is_fresh(1000)
    assert window.is_fresh(999)
    assert not window.is_fresh(1000 - 64)       # older than the window: refused
    window.accept(990)
    assert not window.is_fresh(990)
    window.accept(2000)                          # slides far ahead
    assert window.is_fresh(1999) and not window.is_fresh(2000)
