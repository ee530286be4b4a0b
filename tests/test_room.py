"""The server's room rules, without sockets: numbering, limits, DMs, who."""
from concurrent.futures import Future

import pytest

from common.accounts import AccountStore
from common.errors import ProtocolError
from common.messages import (
    ChangeName,
    ErrorNotice,
    History,
    HistoryStart,
    IgnoreList,
    IgnoreUser,
    LoginAccepted,
    LoginRejected,
    MemberList,
    PrivateMessage,
    RepairRequest,
    RoomBatch,
    RoomEvent,
    RoomGroup,
    RoomKey,
    Say,
    WhoRequest,
    encode,
)
from common.room import (
    BATCHING,
    HEARTBEAT_INTERVAL_SECONDS,
    HISTORY_CHUNK_BYTES,
    KEPT_FLOODING,
    MAX_REFUSED_PER_WINDOW,
    MAX_RENAMES_PER_ADDRESS,
    MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS,
    MAX_REPAIR_EVENTS_PER_SECOND,
    MAX_WRITES_WAITING,
    RENAME_WINDOW_SECONDS,
    Broadcast,
    Delivery,
    NewRoomKey,
    Room,
    StoreWrite,
)
from common.transcript import EMPTY_HASH, chain_hash
from tests.memory_link import CHEAP_ARGON2

SIGNING_PUBLIC_KEY = bytes(32)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def room_with_accounts(clock, names=(), **options) -> Room:
    """A Room named "server" on an in-memory account store where ``names`` are registered."""
    accounts = AccountStore(":memory:", CHEAP_ARGON2)
    for name in names:
        accounts.register(name, "a good password")
    return Room("server", accounts, SIGNING_PUBLIC_KEY, clock=clock, **options)


@pytest.fixture
def room(clock):
    return room_with_accounts(clock, ("alice", "bob", "carol"), max_members=2, max_messages_per_second=5,
                              random_bytes=counting_bytes())


def counting_bytes():
    """A random source for tests: 0x01..., then 0x02..., so keys are told apart."""
    count = 0

    def next_bytes(size):
        nonlocal count
        count += 1
        return bytes([count]) * size
    return next_bytes


def broadcast_events(instructions):
    return [e for i in instructions if isinstance(i, Broadcast) for e in i.batch.events]


@pytest.mark.points(2)
def test_every_room_event_gets_the_next_number(room):
    room.join(1, "alice")
    room.join(2, "bob")
    room.handle(1, Say("one"))
    room.server_says("two")
    room.leave(2)
    assert [(e.seq, e.kind, e.sender) for e in list(room.log)] == [
        (1, "join", "alice"), (2, "join", "bob"), (3, "say", "alice"), (4, "say", "server"), (5, "leave", "bob")]


@pytest.mark.points(1)
def test_a_say_is_broadcast_to_the_room_not_echoed_privately(room):
    room.join(1, "alice")
    assert room.handle(1, Say("hello")) == []
    assert broadcast_events(room.tick()) == [RoomEvent(1, "join", "alice", ""), RoomEvent(2, "say", "alice", "hello")]


@pytest.mark.points(1)
def test_the_same_name_cannot_join_twice(room):
    room.join(1, "alice")
    assert room.join(2, "alice") == [Delivery(2, LoginRejected("alice is already in the room"))]


@pytest.mark.points(1)
def test_an_account_shown_under_another_name_cannot_join_a_second_time(room):
    room.join(1, "alice")
    room.handle(1, ChangeName("ally"))
    assert room.join(2, "alice") == [Delivery(2, LoginRejected("alice is already in the room"))]


def squatted(room, name="dave"):
    """mallory is shown as ``name`` before that name has an account; then it gets one."""
    room.max_members = 3
    room.join(1, "alice")
    room.accounts.register("mallory", "a good password")
    room.join(2, "mallory")
    assert room.handle(2, ChangeName(name)) == []   # no account of that name yet: allowed
    room.accounts.register(name, "dave's own password")


@pytest.mark.points(2)
def test_the_owner_of_a_name_a_member_shows_gets_in_and_the_member_its_own_name_back(room):
    squatted(room)
    welcome = [d.message for d in room.join(3, "dave")]
    assert welcome[0] == LoginAccepted("dave", "server")
    assert list(room.log)[-2:] == [RoomEvent(4, "reclaim", "dave", "mallory"), RoomEvent(5, "join", "dave", "")]
    assert room.members == {1: "alice", 2: "mallory", 3: "dave"}
    room.handle(2, Say("it was me"))
    assert list(room.log)[-1] == RoomEvent(6, "say", "mallory", "it was me")


@pytest.mark.points(1)
def test_a_name_registered_while_a_member_shows_it_is_given_back_before_that_member_speaks(room):
    squatted(room)                                   # dave registered elsewhere (Lab 1), not in the room
    room.handle(2, Say("I am dave"))
    assert list(room.log)[-2:] == [RoomEvent(4, "reclaim", "dave", "mallory"),
                                   RoomEvent(5, "say", "mallory", "I am dave")]


@pytest.mark.points(2)
def test_dms_address_accounts_first_then_shown_names(room):
    room.max_members = 3
    room.join(1, "alice")
    room.join(2, "bob")
    room.handle(1, ChangeName("ally"))
    for typed in ("alice", "ally", "ALLY"):           # the account, and the name it shows
        sent = room.handle(2, PrivateMessage("bob", typed, "hi"))
        assert [d.to for d in sent] == [1, 2]
    room.handle(2, ChangeName("dave"))
    room.accounts.register("dave", "dave's own password")
    assert room.handle(1, PrivateMessage("ally", "dave", "hi dave")) == [   # dave's, not bob's now
        Delivery(1, ErrorNotice("your message to dave was not delivered"))]
    assert list(room.log)[-1] == RoomEvent(5, "reclaim", "dave", "bob")


@pytest.mark.points(1)
def test_a_dm_signed_with_the_name_before_a_rename_is_sent_and_one_signed_by_another_is_refused(room):
    room.join(1, "alice")
    room.join(2, "bob")
    room.handle(1, ChangeName("ally"))
    room.handle(1, ChangeName("alfa"))   # the client has not seen its renames' events yet
    for signed in ("alfa", "alice", "ally"):   # the name shown, the account, the name before the last rename
        assert [d.to for d in room.handle(1, PrivateMessage(signed, "bob", "hi"))] == [2, 1]
    room.clock.now += 1   # a new second: the request budget is whole again
    assert room.handle(1, PrivateMessage("bob", "bob", "hi")) == [
        Delivery(1, ErrorNotice("a DM's sender must be your own name"))]


@pytest.mark.points(1)
def test_an_ignore_of_a_shown_name_stores_the_account_and_of_an_accounts_name_that_account(room):
    squatted(room)
    room.handle(1, ChangeName("ally"))
    [write] = room.handle(2, IgnoreUser("ally"))
    assert write.write() == frozenset({"alice"})
    [write] = room.handle(1, IgnoreUser("dave"))      # mallory showed dave; dave is an account
    assert write.write() == frozenset({"dave"})


@pytest.mark.points(1)
@pytest.mark.parametrize(("typed", "taken"), [("BOB", "bob"), ("\uff43\uff41\uff52\uff4f\uff4c", "carol"),
                                              ("mallory", "mallory")])
def test_nobody_is_shown_under_an_accounts_name_in_the_room_or_not(room, typed, taken):
    room.accounts.register("mallory", "a good password")
    room.join(1, "mallory")
    room.join(2, "bob")
    room.handle(2, ChangeName("bobby"))              # bob's account still owns "bob"; carol is not here
    if taken == "mallory":
        room.handle(1, ChangeName("mal"))
        [refusal] = room.handle(2, ChangeName(typed))
    else:
        [refusal] = room.handle(1, ChangeName(typed))   # folded like every name: case, full-width letters
    assert refusal.message == ErrorNotice(f"{taken} is taken")


@pytest.mark.points(1)
def test_a_full_room_refuses_newcomers_with_a_reason(room):
    room.join(1, "alice")
    room.join(2, "bob")
    [refusal] = room.join(3, "carol")
    assert isinstance(refusal.message, LoginRejected) and "full" in refusal.message.reason


@pytest.mark.points(2)
def test_flooding_gets_one_notice_a_second_to_the_flooder_only_and_the_allowance_refills(room, clock):
    room.join(1, "alice")
    replies = [room.handle(1, Say(f"spam {i}")) for i in range(8)]
    notices = [r for reply in replies for r in reply]
    assert len(notices) == 1 and notices[0].to == 1 and "slow down" in notices[0].message.text
    assert room.latest_seq == 1 + 5                 # the join, then five of the eight
    clock.now += 1.0
    assert room.handle(1, Say("later")) == [] and list(room.log)[-1].text == "later"


@pytest.mark.points(2)
def test_a_member_that_keeps_flooding_is_dropped(room, clock):
    room.join(1, "alice")
    for i in range(5 + MAX_REFUSED_PER_WINDOW):
        room.handle(1, Say(f"spam {i}"))
    with pytest.raises(ProtocolError, match=KEPT_FLOODING):
        room.handle(1, Say("one more"))


@pytest.mark.points(2)
@pytest.mark.parametrize("request_", [WhoRequest(), RepairRequest(0), IgnoreUser("bob")])
def test_every_kind_of_request_spends_the_budget(room, request_):
    room.join(1, "alice")
    replies = [room.handle(1, request_) for _ in range(6)]
    assert any(isinstance(r.message, ErrorNotice) and "slow down" in r.message.text for r in replies[-1])


@pytest.mark.points(2)
def test_repairs_pull_at_most_an_allowance_of_events_per_second(room, clock):
    room.join(1, "alice")
    for i in range(3 * MAX_REPAIR_EVENTS_PER_SECOND):
        room.server_says(f"line {i}")
    pulled = 0
    for _ in range(5):                               # within the request budget of one second
        pulled += sum(len(d.message.events) for d in room.handle(1, RepairRequest(0)))
    assert pulled == MAX_REPAIR_EVENTS_PER_SECOND
    clock.now += 1.0
    assert sum(len(d.message.events) for d in room.handle(1, RepairRequest(0))) > 0


def history_bytes(deliveries) -> int:
    return sum(len(encode(event)) + 2 for delivery in deliveries for event in delivery.message.events)


@pytest.mark.points(2)
def test_the_members_of_one_address_share_an_allowance_of_repair_bytes_per_second(clock):
    room = room_with_accounts(clock, max_members=30, max_members_per_source=30, max_messages_per_second=1000,
                              history_bytes=10_000_000)
    for i in range(20):
        room.join(i, f"member_{i}", "10.0.0.2")   # one student, 20 members
    room.join("alice", "alice", "10.0.0.1")
    for i in range(3000):
        room.server_says(f"{i:04} " + "x" * 900)
    clock.now += 10.0                                # every allowance full again
    pulled = sum(history_bytes(room.handle(i, RepairRequest(0))) for i in range(20) for _ in range(3))
    assert MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS - 1000 < pulled <= MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS
    answer = room.handle(0, RepairRequest(0))        # past the allowance: an answer that says how far the log goes
    assert answer and history_bytes(answer) == 0 and answer[0].message.latest_seq == room.latest_seq
    # Another address is not held back by them: a full answer.
    assert len([e for d in room.handle("alice", RepairRequest(0)) for e in d.message.events]) == 500
    clock.now += 0.5                                 # half a second later, half the address's allowance
    pulled = sum(history_bytes(room.handle(i, RepairRequest(0))) for i in range(20))
    assert MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS / 2 - 1000 < pulled <= MAX_REPAIR_BYTES_PER_SECOND_PER_ADDRESS / 2


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
    room.rename_server("host")
    assert list(room.log)[-1] == RoomEvent(2, "rename", "server", "host")
    with pytest.raises(ProtocolError):
        room.rename_server("alice")
    room.handle(1, ChangeName("ally"))
    with pytest.raises(ProtocolError, match="alice is taken by a member"):   # its account: it may go back to it
        room.rename_server("alice")
    room.accounts.register("teacher", "a student's own password")
    with pytest.raises(ProtocolError, match="teacher is an account's name"):   # its owner could never log in
        room.rename_server("teacher")
    assert room.server_name == "host"


@pytest.mark.points(2)
def test_repair_returns_the_missing_events_in_record_sized_chunks(room):
    room.join(1, "alice")
    for i in range(60):
        room.server_says(f"{i:03} " + "x" * 500)
    replies = room.handle(1, RepairRequest(10))
    histories = [r.message for r in replies]
    assert all(isinstance(h, History) and h.latest_seq == room.latest_seq for h in histories)
    assert len(histories) > 1
    assert [e for h in histories for e in h.events] == list(room.log)[10:]
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
    assert first + rest == list(room.log)


@pytest.mark.points(2)
def test_a_newcomer_gets_welcome_key_ignores_and_history_in_that_order(room):
    room.join(1, "alice")
    kinds = [type(d.message) for d in room.join(2, "bob")]
    assert kinds[:3] == [LoginAccepted, RoomKey, IgnoreList]
    assert kinds[3:] and all(kind is History for kind in kinds[3:])


@pytest.mark.points(1)
def test_a_multicast_room_names_its_group_to_a_newcomer_right_after_the_welcome(room):
    room.multicast_group = "239.255.76.61"   # the server chose multicast (common/net.py)
    messages = [d.message for d in room.join(1, "alice")]
    assert [type(m) for m in messages[:4]] == [LoginAccepted, RoomGroup, RoomKey, IgnoreList]
    assert messages[1] == RoomGroup("239.255.76.61")


@pytest.mark.points(3)
def test_a_leave_flushes_under_the_old_key_then_hands_a_new_key_to_those_left(room):
    room.join(1, "alice")
    room.join(2, "bob")
    room.tick()
    room.handle(1, Say("before bob left"))
    room.leave(2)
    room.server_says("after bob left")
    out = room.tick(force=True)
    kinds = [type(i) for i in out]
    assert kinds == [Broadcast, NewRoomKey, Delivery, Broadcast]
    assert [e.text for e in out[0].batch.events] == ["before bob left"]
    assert out[1] == NewRoomKey(2, bytes([2]) * 32)
    assert out[2] == Delivery(1, RoomKey(2, bytes([2]) * 32, SIGNING_PUBLIC_KEY))
    assert [(e.kind, e.sender) for e in out[3].batch.events] == [("leave", "bob"), ("say", "server")]


@pytest.mark.points(2)
def test_many_leaves_in_one_round_cost_one_new_key(clock):
    room = room_with_accounts(clock, max_members=600, max_members_per_source=600)
    for conn in range(500):
        room.join(conn, f"member_{conn}")
    room.tick(force=True)
    for conn in range(499):
        room.leave(conn)
    out = room.tick(force=True)
    assert sum(isinstance(i, NewRoomKey) for i in out) == 1
    assert [i.to for i in out if isinstance(i, Delivery)] == [499]
    assert [e.sender for e in broadcast_events(out)] == [f"member_{conn}" for conn in range(499)]


def said(instructions):
    return [event.text for event in broadcast_events(instructions)]


@pytest.mark.points(2)
def test_a_quiet_room_sends_at_once_and_a_busy_one_holds_events_for_a_while(room, clock):
    room.join(1, "alice")
    assert len(broadcast_events(room.tick())) == 1          # the first event: at once
    clock.now += BATCHING.quiet_seconds
    room.server_says("after a quiet spell")
    assert room.wait_at_most() == 0 and said(room.tick()) == ["after a quiet spell"]   # at once, alone
    clock.now += BATCHING.quiet_seconds / 2
    room.server_says("soon after")
    assert room.tick() == []                                  # busy: it waits for company ...
    assert room.wait_at_most() == pytest.approx(BATCHING.hold_seconds)   # ... and the loop knows how long
    clock.now += BATCHING.hold_seconds / 2
    room.server_says("company")
    assert room.tick() == []
    clock.now += BATCHING.hold_seconds / 2
    assert said(room.tick()) == ["soon after", "company"]    # ... but no longer than the hold
    clock.now += HEARTBEAT_INTERVAL_SECONDS
    assert room.wait_at_most() == 0
    [heartbeat] = room.tick()
    assert heartbeat == Broadcast(RoomBatch((), room.latest_seq))


@pytest.mark.points(1)
def test_a_busy_room_sends_a_batch_once_enough_events_wait_and_the_spacing_passed(room, clock):
    room.join(1, "alice")
    room.tick()
    last_datagram_at = clock.now
    clock.now += BATCHING.quiet_seconds / 2                  # busy: nothing goes at once
    for number in range(BATCHING.full_events - 1):
        room.server_says(f"line {number}")
        assert room.tick() == []
    room.server_says("the one that fills it")
    if clock.now < last_datagram_at + BATCHING.spacing_seconds:   # full, but datagrams keep their spacing
        assert room.tick() == []
        assert room.wait_at_most() == pytest.approx(last_datagram_at + BATCHING.spacing_seconds - clock.now)
        clock.now = last_datagram_at + BATCHING.spacing_seconds
    assert clock.now < last_datagram_at + BATCHING.quiet_seconds / 2 + BATCHING.hold_seconds   # before the hold
    [datagram] = room.tick()                                  # one datagram, one signature, for all of them
    assert [e.text for e in datagram.batch.events] == [*(f"line {n}" for n in range(BATCHING.full_events - 1)),
                                                       "the one that fills it"]


@pytest.mark.points(1)
def test_the_members_of_one_address_try_only_so_many_renames_a_minute(room, clock):
    room.join(1, "alice", "10.0.0.5")
    room.join(2, "bob", "10.0.0.5")   # the same address: one allowance for both
    for i in range(MAX_RENAMES_PER_ADDRESS):
        clock.now += 0.5   # within every member's request budget
        room.handle(1 + i % 2, ChangeName("carol"))   # an account's name: "carol is taken", still counted
    clock.now += 0.5
    [refusal] = room.handle(1, ChangeName("ally"))
    assert refusal.message.text.startswith("too many name changes from your address; try again in ")
    clock.now += RENAME_WINDOW_SECONDS
    assert room.handle(1, ChangeName("ally")) == [] and room.members[1] == "ally"


def finished(write) -> Future:
    """What the server's writer thread hands back: ``write()``'s outcome."""
    outcome = Future()
    try:
        outcome.set_result(write())
    except ProtocolError as error:
        outcome.set_exception(error)
    return outcome


@pytest.mark.points(2)
def test_an_ignore_is_written_off_the_loop_and_answered_once_written(room, clock):
    room.join(1, "alice")
    room.join(2, "bob")
    [write] = room.handle(1, IgnoreUser("bob"))           # nothing written yet: the server's writer does it
    assert isinstance(write, StoreWrite) and write.to == 1
    assert room.accounts.ignored_by("alice") == frozenset()
    assert room.written(1, finished(write.write)) == [Delivery(1, IgnoreList(("bob",)))]
    [write] = room.handle(1, IgnoreUser("alice"))
    assert room.written(1, finished(write.write)) == [Delivery(1, ErrorNotice("you cannot ignore yourself"))]
    waiting = []
    for _ in range(MAX_WRITES_WAITING + 1):              # a locked database: the writes pile up ...
        clock.now += 1                                    # (within the request budget)
        waiting += room.handle(2, IgnoreUser("carol"))
    assert all(isinstance(w, StoreWrite) for w in waiting[:-1])    # ... but only so many
    assert "still being saved" in waiting[-1].message.text
    room.leave(2)
    assert room.written(2, finished(waiting[0].write)) == []   # it left while its write waited


def small_window_room(clock, **options):
    return room_with_accounts(clock, max_members=10, max_messages_per_second=1000, **options)


@pytest.mark.points(2)
def test_the_log_keeps_a_window_of_the_newest_events_by_count_and_by_bytes(clock):
    by_count = small_window_room(clock, history_events=5)
    by_count.join(1, "alice")
    for i in range(20):
        by_count.server_says(f"line {i}")
    assert [e.seq for e in by_count.log] == [17, 18, 19, 20, 21] and by_count.log.not_kept_seq == 16
    by_bytes = small_window_room(clock, history_bytes=5000)
    for i in range(20):
        by_bytes.server_says(f"{i:03} " + "x" * 900)  # about 930 bytes each: five fit
    assert [e.seq for e in by_bytes.log] == [16, 17, 18, 19, 20] and by_bytes.log.bytes <= 5000
    assert by_bytes.latest_seq == 20


@pytest.mark.points(2)
def test_a_late_joiner_gets_what_stands_for_the_events_not_kept_then_the_window(clock):
    room = small_window_room(clock, history_events=5)
    room.join(1, "alice")
    room.join(2, "bob")
    room.handle(1, ChangeName("ally"))
    room.rename_server("host")
    for i in range(10):
        room.handle(2, Say(f"line {i}"))
    messages = [d.message for d in room.join(3, "carol")]
    assert [type(m) for m in messages] == [LoginAccepted, RoomKey, IgnoreList, HistoryStart, History]
    start, history = messages[3], messages[4]
    assert start.summary == RoomEvent(9, "not_kept", "host", "")          # #1 to #9: 2 joins, 2 renames, 5 lines
    assert start.members == ("ally alice", "bob")                      # the room after #9
    assert [e.seq for e in history.events] == [10, 11, 12, 13, 14] and history.latest_seq == 14
    running_hash = EMPTY_HASH
    for seq, event in enumerate([RoomEvent(1, "join", "alice", ""), RoomEvent(2, "join", "bob", ""),
                                 RoomEvent(3, "rename", "alice", "ally"), RoomEvent(4, "rename", "server", "host"),
                                 *(RoomEvent(5 + i, "say", "bob", f"line {i}") for i in range(5))], start=1):
        assert event.seq == seq
        running_hash = chain_hash(running_hash, event)
    assert start.running_hash == running_hash


@pytest.mark.points(1)
def test_a_repair_from_before_the_window_starts_with_what_stands_for_it_and_one_inside_does_not(clock):
    room = small_window_room(clock, history_events=5)
    room.join(1, "alice")
    for i in range(10):
        room.server_says(f"line {i}")
    behind = [d.message for d in room.handle(1, RepairRequest(3))]
    assert [type(m) for m in behind] == [HistoryStart, History] and behind[0].summary.seq == 6
    inside = [d.message for d in room.handle(1, RepairRequest(8))]
    assert [type(m) for m in inside] == [History] and [e.seq for e in inside[0].events] == [9, 10, 11]


@pytest.mark.points(2)
def test_a_leave_soon_after_a_new_key_waits_for_the_interval_while_the_room_goes_on(clock):
    room = small_window_room(clock, room_key_interval_seconds=1.0)
    for conn in range(1, 5):
        room.join(conn, f"member_{conn}")
    room.tick(force=True)
    room.leave(1)
    assert sum(isinstance(i, NewRoomKey) for i in room.tick(force=True)) == 1   # the first leave: at once
    clock.now += 0.1
    room.leave(2)
    room.handle(3, Say("still under the key member_2 knows"))
    out = room.tick(force=True)
    assert not any(isinstance(i, NewRoomKey) for i in out) and said(out)[-1] == "still under the key member_2 knows"
    clock.now = 0.99
    assert not any(isinstance(i, NewRoomKey) for i in room.tick())   # a heartbeat, under that key
    assert room.wait_at_most() == pytest.approx(0.01)                  # the loop wakes for the new key
    clock.now = 1.0
    out = room.tick()
    assert [type(i) for i in out] == [NewRoomKey, Delivery, Delivery]   # one new key, to the two left
    assert room.epoch == 3


@pytest.mark.points(1)
def test_what_stands_for_the_events_not_kept_fits_one_record_even_for_500_renamed_members(clock):
    from common.framing import MAX_RECORD_BYTES
    from common.noise import TAG_BYTES
    room = small_window_room(clock, history_events=2)
    room.max_members = room.max_members_per_source = 501
    for i in range(500):
        room.join(i, f"member_{i:013}", f"10.0.{i // 250}.{i % 250}")   # the longest names there are
        room.handle(i, ChangeName(f"renamed_{i:012}"))
    room.server_says("the window")
    room.server_says("holds only these two")
    messages = [d.message for d in room.join("late", "late_joiner", "10.9.9.9")]
    start = next(m for m in messages if isinstance(m, HistoryStart))
    assert len(encode(start)) + TAG_BYTES <= MAX_RECORD_BYTES
    assert len(start.members) == 500 and f"renamed_{0:012} member_{0:013}" in start.members
    assert all(entry.startswith("renamed_") for entry in start.members)   # past the record's room: no account
