"""The server operator's controls and the idle limit, without sockets
(common/controls.py, and what the room and the doorway do for them)."""
import pytest

from common.admission import BANNED, LAB2_LIMITS, Doorway, address_key
from common.errors import ProtocolError
from common.messages import (
    ChangeName, ErrorNotice, EventKind, LoginRejected, PrivateMessage, RepairRequest, RoomEvent, Say,
)
from common.controls import (
    DEFAULT_MUTE_MINUTES, IDLE_CHECK_INTERVAL_SECONDS, NO_REASON, YOU_ARE_BANNED, Operator, removal_words,
)
from common.room import Delivery, NewRoomKey
from common.transcript import KEEPALIVE_SECONDS, Roster, Transcript, format_event
from tests.test_room import FakeClock, counting_bytes, room_with_accounts

IDLE_SECONDS = 600


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def room(clock):
    return room_with_accounts(clock, ("alice", "bob", "carol", "mallory"), max_members=10,
                              random_bytes=counting_bytes())


@pytest.fixture
def doorway(clock):
    return Doorway(LAB2_LIMITS, lambda call, on_done: None, 2, lambda conn: None, clock)


@pytest.fixture
def operator(room, doorway):
    return Operator(room, doorway, IDLE_SECONDS)


def last_event(room):
    return list(room.log)[-1]


@pytest.mark.points(2)
def test_a_kicked_member_leaves_with_the_reason_as_a_numbered_event_and_the_room_is_rekeyed(room, operator):
    room.join(1, "alice", "10.0.0.1")
    room.join(2, "bob", "10.0.0.2")
    room.tick()
    assert operator.command("/kick", "bob  spamming the room ") == {2: removal_words("spamming the room")}
    assert 2 in room.members   # the server closes it; its leave is the removal
    room.leave(2)
    assert last_event(room) == RoomEvent(3, "remove", "bob", "spamming the room")
    assert format_event(last_event(room)) == "#3 * bob was removed: spamming the room"
    out = room.tick()
    assert any(isinstance(i, NewRoomKey) for i in out) and 2 not in [i.to for i in out if isinstance(i, Delivery)]
    assert operator.command("/kick", "alice") == {1: "you were removed from the room: no reason given"}
    room.leave(1)
    assert last_event(room).text == NO_REASON


@pytest.mark.points(1)
def test_the_operator_is_told_why_a_command_did_nothing(room, operator):
    room.join(1, "alice", "10.0.0.1")
    for command, argument, reason in [
        ("/kick", "", "usage: /kick NAME [REASON]"),
        ("/kick", "dave", "nobody in the room is called dave"),
        ("/kick", "alice a\u202ereason", "a message may not contain a bidirectional override"),
        ("/kick", "alice " + "x" * 201, "a reason is at most 200 bytes"),
        ("/mute", "alice soon", "usage: /mute NAME [MINUTES]"),
        ("/mute", "alice 0", "usage: /mute NAME [MINUTES]"),
        ("/mute", "alice \uff15", "usage: /mute NAME [MINUTES]"),   # a full-width 5: digits are ASCII
        ("/unmute", "alice", "alice is not muted"),
        ("/ban", "dave", "dave is neither a member's name nor an IP address"),
    ]:
        with pytest.raises(ProtocolError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            operator.command(command, argument)
    assert [e.kind for e in room.log] == ["join"] and 1 in room.members


@pytest.mark.points(2)
def test_a_muted_account_is_answered_that_it_is_muted_until_unmuted(room, operator, clock):
    room.join(1, "alice", "10.0.0.1")
    room.join(2, "bob", "10.0.0.2")
    assert operator.command("/mute", "bob 5") == {}
    assert format_event(last_event(room)) == "#3 * bob is muted for 5 min"
    refusal = [Delivery(2, ErrorNotice("you are muted for 5 more min: your messages, DMs and renames are refused"))]
    assert room.handle(2, Say("let me talk")) == refusal
    assert room.handle(2, PrivateMessage("bob", "alice", "psst")) == refusal
    assert room.handle(2, ChangeName("bobby")) == refusal
    assert room.handle(1, PrivateMessage("alice", "bob", "you may still read")) != []   # DMs to it still arrive
    operator.command("/unmute", "bob")
    assert format_event(last_event(room)) == "#4 * bob may speak again"
    room.handle(2, Say("thank you"))
    assert last_event(room) == RoomEvent(5, "say", "bob", "thank you")


@pytest.mark.points(2)
def test_a_mute_ends_on_its_own_and_outlasts_a_new_login(room, operator, clock):
    room.join(1, "bob", "10.0.0.2")
    operator.command("/mute", "bob")
    assert last_event(room).text == f"{DEFAULT_MUTE_MINUTES} min"
    room.leave(1)
    room.join(2, "bob", "10.0.0.2")
    clock.now = DEFAULT_MUTE_MINUTES * 60 - 61
    assert room.handle(2, Say("again?"))[0].message.text.startswith("you are muted for 2 more min")
    clock.now = DEFAULT_MUTE_MINUTES * 60
    assert room.handle(2, Say("now?"))[0].message.text.startswith("you are muted for 1 more min")   # no event yet
    assert operator.tick(clock.now) == {}
    assert last_event(room) == RoomEvent(5, "unmute", "bob", "")
    assert room.handle(2, Say("free")) == [] and last_event(room).text == "free"


@pytest.mark.points(2)
def test_a_ban_refuses_the_address_at_the_door_and_removes_every_member_from_it(room, operator, doorway, clock):
    room.join(1, "alice", "10.0.0.1")
    room.join(2, "mallory", "10.0.0.66")
    assert operator.command("/ban", "mallory") == {2: YOU_ARE_BANNED}
    assert doorway.refusal("10.0.0.66", clock.now) == BANNED
    assert doorway.refusal("::ffff:10.0.0.66", clock.now) == BANNED   # the same address, seen over IPv6
    assert doorway.refusal("10.0.0.1", clock.now) is None
    room.leave(2)
    assert format_event(last_event(room)) == "#3 * mallory was removed: banned until the server stops"


@pytest.mark.points(1)
def test_a_ban_by_address_removes_all_its_members_and_none_from_elsewhere(room, operator, doorway):
    room.join(1, "alice", "10.0.0.1")
    room.join(2, "bob", "::ffff:10.0.0.66")
    room.join(3, "carol", "10.0.0.66")
    assert operator.command("/ban", "10.0.0.66") == {2: YOU_ARE_BANNED, 3: YOU_ARE_BANNED}
    assert doorway.is_banned("10.0.0.66") and not doorway.is_banned("10.0.0.1")
    assert address_key("::FFFF:10.0.0.66") == "10.0.0.66" and address_key("a source") == "a source"


@pytest.mark.points(2)
def test_members_of_one_ipv6_64_share_its_budgets_and_its_ban(clock, doorway):
    room = room_with_accounts(clock, ("alice", "bob", "carol", "dave"), max_members=10, max_members_per_source=2,
                              random_bytes=counting_bytes())
    operator = Operator(room, doorway, IDLE_SECONDS)
    room.join(1, "alice", "2001:db8:1:2::a")
    room.join(2, "bob", "2001:db8:1:2::b")   # another address of the same /64: the same host's budget
    assert room.join(3, "carol", "2001:db8:1:2::c") == [
        Delivery(3, LoginRejected("too many members from your address; try again later"))]
    room.join(4, "dave", "2001:db8:1:3::c")  # the next /64 is someone else
    assert room.source_of(1) == room.source_of(2) == "2001:db8:1:2::/64" != room.source_of(4)
    assert operator.command("/ban", "alice") == {1: YOU_ARE_BANNED, 2: YOU_ARE_BANNED}
    assert doorway.is_banned("2001:db8:1:2::ffff") and not doorway.is_banned("2001:db8:1:3::c")


@pytest.mark.points(1)
def test_a_link_local_ipv6_address_is_its_host_not_a_64_every_host_shares():
    assert address_key("fe80::1%eth0") == "fe80::1%eth0" != address_key("fe80::2%eth0")
    assert address_key("fe80::1") != address_key("fe80::2")
    assert address_key("2001:db8:1:2::a") == address_key("2001:db8:1:2::b") == "2001:db8:1:2::/64"


@pytest.mark.points(1)
def test_a_ban_is_said_on_the_operators_screen_even_when_nobody_was_from_that_address(room, doorway):
    notes = []
    operator = Operator(room, doorway, IDLE_SECONDS, notes.append)
    room.join(1, "alice", "10.0.0.1")
    assert operator.command("/ban", "10.0.0.9") == {} and 1 in room.members
    assert notes == ["10.0.0.9 is banned until the server stops"]


@pytest.mark.points(1)
def test_an_idle_limit_shorter_than_two_keepalives_is_warned_of(room, doorway):
    assert Operator(room, doorway, 0).idle_limit_warning() is None                        # no limit
    assert Operator(room, doorway, 2 * KEEPALIVE_SECONDS).idle_limit_warning() is None
    assert Operator(room, doorway, 5).idle_limit_warning() == (
        "warning: MAX_IDLE_SECONDS=5 is less than twice the clients' keepalive (60 s): "
        "members who only read will be removed as idle")


@pytest.mark.points(2)
def test_a_member_heard_from_is_never_idle_and_a_silent_one_is_removed(room, operator, clock):
    room.accounts.register("reader", "a good password")
    room.accounts.register("gone", "a good password")
    room.join(1, "reader", "10.0.0.1")
    room.join(2, "gone", "10.0.0.2")
    transcript = Transcript()   # the reader's client: it says nothing, and only keeps alive
    transcript.repair_due(clock.now)
    while clock.now < IDLE_SECONDS + IDLE_CHECK_INTERVAL_SECONDS:
        clock.now += 1
        if (after := transcript.repair_due(clock.now)) is not None:
            room.handle(1, RepairRequest(after))
        if removed := operator.tick(clock.now):
            break
    assert removed == {2: removal_words("idle for 10 min")} and clock.now == IDLE_SECONDS
    room.leave(2)
    assert format_event(last_event(room)) == "#3 * gone was removed: idle for 10 min"
    assert operator.tick(clock.now + 0.5) == {}   # once a second is often enough


@pytest.mark.points(1)
def test_no_idle_limit_removes_nobody(room, doorway, clock):
    operator = Operator(room, doorway, 0)
    room.join(1, "alice", "10.0.0.1")
    clock.now = 10 ** 6
    assert operator.tick(clock.now) == {}


@pytest.mark.points(1)
def test_a_client_that_misses_nothing_asks_once_every_keepalive_interval():
    transcript = Transcript()
    transcript.receive([], latest_seq=0)
    assert transcript.repair_due(100.0) is None   # the first call starts the clock
    assert transcript.repair_due(100.0 + KEEPALIVE_SECONDS - 1) is None
    assert transcript.repair_due(100.0 + KEEPALIVE_SECONDS) == 0
    assert transcript.repair_due(100.0 + KEEPALIVE_SECONDS + 1) is None


@pytest.mark.points(1)
def test_every_screen_follows_a_removal_as_a_leave():
    roster = Roster("server")
    roster.apply(RoomEvent(1, EventKind.JOIN, "alice", ""))
    roster.apply(RoomEvent(2, EventKind.MUTE, "alice", "10 min"))
    roster.apply(RoomEvent(3, EventKind.UNMUTE, "alice", ""))
    assert roster.names() == ["server", "alice"]
    roster.apply(RoomEvent(4, EventKind.REMOVE, "alice", "spamming"))
    assert roster.names() == ["server"]
