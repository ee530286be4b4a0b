"""The server's room rules, without sockets: numbering, limits, DMs, who."""
import pytest

from common.accounts import AccountStore
from common.errors import ProtocolError
from common.messages import (
    ErrorNotice, History, IgnoreUser, LoginRejected, MemberList, PrivateMessage, RepairRequest, RoomBatch,
    RoomEvent, Say, WhoRequest,
)
from common.room import HISTORY_CHUNK_BYTES, ROOM, Delivery, Room
from tests.memory_link import CHEAP_ARGON2


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def room(clock):
    accounts = AccountStore(":memory:", CHEAP_ARGON2)
    for name in ("alice", "bob", "carol"):
        accounts.register(name, "a good password")
    return Room("server", accounts, max_members=2, max_messages_per_second=5, clock=clock)


@pytest.mark.points(2)
def test_every_room_event_gets_the_next_number(room):
    room.join(1, "alice")
    room.join(2, "bob")
    room.handle(1, Say("one"))
    room.server_says("two")
    room.leave(2)
    assert [(e.seq, e.kind, e.sender) for e in room.log] == [
        (1, "join", "alice"), (2, "join", "bob"), (3, "say", "alice"), (4, "say", "server"), (5, "leave", "bob")]


@pytest.mark.points(1)
def test_a_say_is_broadcast_to_the_room_not_echoed_privately(room):
    room.join(1, "alice")
    assert room.handle(1, Say("hello")) == [Delivery(ROOM, RoomEvent(2, "say", "alice", "hello"))]


@pytest.mark.points(1)
def test_the_same_name_cannot_join_twice(room):
    room.join(1, "alice")
    assert room.join(2, "alice") == [Delivery(2, LoginRejected("alice is already in the room"))]


@pytest.mark.points(1)
def test_a_full_room_refuses_newcomers_with_a_reason(room):
    room.join(1, "alice")
    room.join(2, "bob")
    [refusal] = room.join(3, "carol")
    assert isinstance(refusal.message, LoginRejected) and "full" in refusal.message.reason


@pytest.mark.points(2)
def test_flooding_gets_an_error_to_the_flooder_only_and_the_allowance_refills(room, clock):
    room.join(1, "alice")
    replies = [room.handle(1, Say(f"spam {i}")) for i in range(8)]
    errors = [r for r in replies if r[0].to == 1 and isinstance(r[0].message, ErrorNotice)]
    assert len(errors) == 3 and "slow down" in errors[0][0].message.text
    clock.now += 1.0
    assert room.handle(1, Say("later"))[0].to is ROOM


@pytest.mark.points(1)
def test_blank_or_multiline_text_gets_an_error_and_no_number(room):
    room.join(1, "alice")
    for text in ("  ", "two\nlines"):
        [reply] = room.handle(1, Say(text))
        assert reply.to == 1 and isinstance(reply.message, ErrorNotice)
    assert room.latest_seq == 1


@pytest.mark.points(1)
def test_a_dm_with_a_forged_sender_is_refused(room):
    room.join(1, "alice")
    room.join(2, "bob")
    [reply] = room.handle(1, PrivateMessage("bob", "bob", "I am bob"))
    assert reply.to == 1 and isinstance(reply.message, ErrorNotice)


@pytest.mark.points(1)
def test_a_dm_to_someone_absent_is_not_delivered(room):
    room.join(1, "alice")
    assert room.handle(1, PrivateMessage("alice", "nobody", "hi")) == [
        Delivery(1, ErrorNotice("your message to nobody was not delivered"))]


@pytest.mark.points(1)
def test_messages_before_login_are_a_protocol_error(room):
    with pytest.raises(ProtocolError, match="log in"):
        room.handle(9, Say("hi"))


@pytest.mark.points(1)
def test_who_lists_the_server_first(room):
    room.join(1, "bob")
    room.join(2, "alice")
    assert room.handle(1, WhoRequest()) == [Delivery(1, MemberList(("server", "alice", "bob")))]


@pytest.mark.points(1)
def test_server_rename_is_a_numbered_event_and_cannot_take_a_members_name(room):
    room.join(1, "alice")
    assert room.rename_server("host")[0].message == RoomEvent(2, "rename", "server", "host")
    with pytest.raises(ProtocolError):
        room.rename_server("alice")


@pytest.mark.points(2)
def test_repair_returns_the_missing_events_in_record_sized_chunks(room):
    room.join(1, "alice")
    for i in range(60):
        room.server_says(f"{i:03} " + "x" * 500)
    replies = room.handle(1, RepairRequest(10))
    histories = [r.message for r in replies]
    assert all(isinstance(h, History) and h.latest_seq == room.latest_seq for h in histories)
    assert len(histories) > 1
    assert [e for h in histories for e in h.events] == room.log[10:]
    assert all(sum(len(e.text) for e in h.events) <= HISTORY_CHUNK_BYTES for h in histories)


@pytest.mark.points(1)
def test_repair_past_the_end_returns_only_the_latest_number(room):
    room.join(1, "alice")
    assert room.handle(1, RepairRequest(99)) == [Delivery(1, History((), 1))]


@pytest.mark.points(2)
def test_a_burst_of_events_packs_into_few_datagrams_that_each_fit(room):
    from common.framing import MAX_DATAGRAM_PLAINTEXT_BYTES
    from common.messages import encode
    events = [RoomEvent(seq, "say", "alice", "y" * 300) for seq in range(1, 21)]
    batches = room.batches(events)
    assert [e for b in batches for e in b.events] == events
    assert all(len(encode(b)) <= MAX_DATAGRAM_PLAINTEXT_BYTES for b in batches)
    assert len(batches) == 7                       # three 300-byte events fit one datagram
    assert room.batches([]) == [RoomBatch((), room.latest_seq)]   # the heartbeat


@pytest.mark.points(1)
def test_one_repair_answers_at_most_a_bounded_piece_and_says_there_is_more(room):
    from common.room import MAX_HISTORY_EVENTS
    room.join(1, "alice")
    for i in range(MAX_HISTORY_EVENTS + 50):
        room.server_says(f"line {i}")
    first = [e for r in room.handle(1, RepairRequest(0)) for e in r.message.events]
    assert len(first) == MAX_HISTORY_EVENTS and first[-1].seq < room.latest_seq
    rest = [e for r in room.handle(1, RepairRequest(first[-1].seq)) for e in r.message.events]
    assert first + rest == room.log


@pytest.mark.points(1)
def test_ignore_requests_count_against_the_rate_limit(room):
    room.join(1, "alice")
    replies = [room.handle(1, IgnoreUser("bob"))[0].message for _ in range(8)]
    assert sum(isinstance(reply, ErrorNotice) and "slow down" in reply.text for reply in replies) == 3
