"""The limits on strangers and on logins, without sockets (common/admission.py)."""
from concurrent.futures import Future

import pytest

from common.admission import (
    BANNED, HANDSHAKE_TIMEOUT_SECONDS, IPV6_PREFIX_BITS, LOGIN_TIMEOUT_SECONDS, MAX_REMEMBERED_HANDSHAKES,
    NEW_CONNECTIONS_BURST_PER_ADDRESS, NEW_CONNECTIONS_PER_SECOND_PER_ADDRESS, REPLAY_MEMORY_SECONDS,
    TOO_MANY_NEW_CONNECTIONS, Doorway, DoorwayLimits, LoginQueue, NoteBudget, PendingConnections, RecentHandshakes,
    TokenBucket, address_key,
)


@pytest.mark.points(2)
def test_a_source_at_its_cap_evicts_only_its_own_oldest_connection():
    pending = PendingConnections(max_total=10, max_per_source=3)
    assert pending.admit("honest", "10.0.0.1", deadline=5) == []
    for i in range(3):
        assert pending.admit(f"flood{i}", "10.0.0.2", deadline=5) == []
    assert pending.admit("flood3", "10.0.0.2", deadline=5) == ["flood0"]
    assert "honest" in pending and "flood0" not in pending and len(pending) == 4


@pytest.mark.points(2)
def test_when_all_are_full_the_busiest_source_makes_room():
    pending = PendingConnections(max_total=4, max_per_source=3)
    pending.admit("a1", "10.0.0.1", deadline=5)
    for i in range(3):
        pending.admit(f"b{i}", "10.0.0.2", deadline=5)
    assert pending.admit("c1", "10.0.0.3", deadline=5) == ["b0"]
    assert "a1" in pending and "c1" in pending


@pytest.mark.points(2)
def test_many_sources_with_one_pending_each_give_way_oldest_first():
    pending = PendingConnections(max_total=4, max_per_source=3)
    for i in range(4):
        pending.admit(f"flood{i}", f"10.0.1.{i}", deadline=5)
    assert pending.admit("honest", "10.0.0.1", deadline=5) == ["flood0"]
    assert pending.admit("flood4", "10.0.1.4", deadline=5) == ["flood1"]   # not the newcomer before it
    assert "honest" in pending


@pytest.mark.points(1)
def test_pending_connections_expire_at_their_deadline():
    pending = PendingConnections(max_total=10, max_per_source=10)
    pending.admit("slow", "10.0.0.1", deadline=5)
    pending.admit("quick", "10.0.0.1", deadline=15)
    assert pending.expired(now=5) == ["slow"]
    pending.forget("slow")
    assert pending.expired(now=20) == ["quick"]


class ManualWorkers:
    """A stand-in for net.BackgroundWork: the test decides when a call finishes."""
    def __init__(self):
        self.running = []

    def submit(self, call, on_done):
        self.running.append((call, on_done))

    def finish_first(self):
        call, on_done = self.running.pop(0)
        future = Future()
        future.set_result(call())
        on_done(future)


@pytest.mark.points(2)
def test_logins_are_handed_out_one_source_at_a_time_and_refused_past_the_caps():
    workers, done = ManualWorkers(), []
    queue = LoginQueue(workers.submit, workers=1, max_queued=5, max_queued_per_source=3, on_evicted=print)
    for i in range(5):
        accepted = queue.add("10.0.0.2", f"flood{i}", lambda i=i: f"flood{i}", lambda f: done.append(f.result()))
        assert accepted == (i < 4)               # one runs, three wait, the fifth is refused
    assert queue.add("10.0.0.1", "alice", lambda: "alice", lambda f: done.append(f.result()))
    workers.finish_first()                       # flood0 done: next comes alice, not flood2
    workers.finish_first()
    assert done == ["flood0", "alice"]


@pytest.mark.points(2)
def test_registrations_from_many_addresses_always_leave_a_worker_for_a_login():
    workers, done = ManualWorkers(), []
    queue = LoginQueue(workers.submit, workers=2, max_queued=64, max_queued_per_source=8, on_evicted=print)
    for i in range(49):   # new accounts from 49 addresses
        assert queue.add(f"10.0.1.{i}", f"new{i}", lambda i=i: f"new{i}", lambda f: done.append(f.result()),
                         registering=True)
    assert len(workers.running) == 1 and queue.registering == 1   # the other worker waits for a login
    queue.add("10.0.0.1", "alice", lambda: "alice", lambda f: done.append(f.result()))
    assert len(workers.running) == 2                               # alice's check starts at once
    workers.finish_first()                                         # new0 ends: one registration follows
    assert len(workers.running) == 2 and queue.registering == 1
    assert workers.running[0][0]() == "alice"


@pytest.mark.points(1)
def test_a_login_whose_connection_closed_is_never_checked():
    workers, done = ManualWorkers(), []
    queue = LoginQueue(workers.submit, workers=1, max_queued=5, max_queued_per_source=5, on_evicted=print)
    for name in ("first", "gone", "last"):
        queue.add("10.0.0.1", name, lambda name=name: name, lambda f: done.append(f.result()))
    queue.discard("gone")
    workers.finish_first()
    workers.finish_first()
    assert done == ["first", "last"] and not workers.running


@pytest.mark.points(1)
def test_a_token_bucket_allows_a_steady_pace_and_a_burst_of_one_second():
    bucket = TokenBucket(rate=4, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [True] * 4 + [False]
    assert bucket.take(0.25) and not bucket.take(0.25)
    assert bucket.available(100.0) == 4          # saving up stops at one second's worth


class SmallQueue:
    """A login queue of one worker, 4 waiting, 3 per address; ``add`` queues a check that does nothing."""
    def __init__(self):
        self.evicted, self.workers = [], ManualWorkers()
        self.queue = LoginQueue(self.workers.submit, workers=1, max_queued=4, max_queued_per_source=3,
                                on_evicted=self.evicted.append)

    def add(self, source, owner):
        return self.queue.add(source, owner, lambda: None, lambda future: None)


@pytest.mark.points(2)
def test_when_the_queue_is_full_the_source_with_the_most_waiting_gives_way():
    small = SmallQueue()
    small.add("10.0.0.2", "running")
    for i in range(3):
        assert small.add("10.0.0.2", f"flood{i}")
    assert small.add("10.0.0.3", "other")   # the fourth waiting: fits
    assert small.add("10.0.0.4", "alice")   # full: flood2 gives way
    assert small.evicted == ["flood2"]
    # A tie gives way too: 2 waiting at 10.0.0.2 against this address's 1 + 1.
    assert small.add("10.0.0.4", "alice_again")
    assert small.evicted == ["flood2", "flood1"]
    # Now this address holds the most: its own newcomer is refused, nobody else's check.
    assert not small.add("10.0.0.4", "alice_third")
    assert small.evicted == ["flood2", "flood1"]


@pytest.mark.points(1)
def test_a_full_queue_of_one_check_per_address_still_lets_a_new_address_in():
    small = SmallQueue()
    small.add("10.0.1.0", "running")
    for i in range(1, 5):   # many addresses, one check each: the queue is full of ties
        assert small.add(f"10.0.1.{i}", f"flood{i}")
    assert small.add("10.0.0.9", "alice")
    assert len(small.evicted) == 1 and len(small.queue) == 4
    for _ in range(5):   # the evicted one's address has nothing left waiting: the rest all run, in turn
        small.workers.finish_first()
    assert not small.workers.running and len(small.queue) == 0


SMALL = DoorwayLimits(strangers=4, strangers_per_address=3, key_holders=2, key_holders_per_address=2,
                      queued_logins=4, queued_logins_per_address=2)


def small_doorway(clock=lambda: 0.0):
    return Doorway(SMALL, ManualWorkers().submit, workers=1, on_evicted=lambda owner: None, clock=clock)


@pytest.mark.points(2)
def test_the_doorway_gives_a_deadline_per_step_and_frees_a_queued_login_from_it():
    doorway = small_doorway()
    for conn in ("stranger", "slow", "quick"):
        assert doorway.arrive(conn, "10.0.0.1", now=0) == []
    assert doorway.handshake_done("slow", now=1) == []
    assert doorway.handshake_done("quick", now=1) == []
    assert doorway.check_password("quick", "10.0.0.1", lambda: "quick", lambda future: None)
    assert doorway.late(now=HANDSHAKE_TIMEOUT_SECONDS) == ["stranger"]
    # Queued, "quick" has no deadline: the login queue bounds it instead.
    assert doorway.late(now=1 + LOGIN_TIMEOUT_SECONDS) == ["stranger", "slow"]
    doorway.leave("stranger")
    doorway.leave("slow")
    assert doorway.late(now=1000) == []


@pytest.mark.points(3)
def test_strangers_never_take_the_place_of_a_connection_that_proved_the_key():
    doorway = small_doorway()
    doorway.arrive("alice", "10.0.0.1", now=0)
    doorway.handshake_done("alice", now=0)
    doorway.arrive("bob", "10.0.0.1", now=0)
    doorway.handshake_done("bob", now=0)           # the key holders are full now
    evicted = []
    for i in range(40):                             # strangers from 40 addresses, one each
        evicted += doorway.arrive(f"stranger{i}", f"10.0.1.{i}", now=0)
    assert "alice" not in evicted and "bob" not in evicted
    assert evicted == [f"stranger{i}" for i in range(36)]   # strangers gave way to strangers, oldest first
    # A new key holder from elsewhere makes room among the key holders only (the busiest address's oldest).
    doorway.arrive("carol", "10.0.0.2", now=0)
    assert doorway.handshake_done("carol", now=0) == ["alice"]
    assert len(doorway.strangers) == SMALL.strangers - 1


@pytest.mark.points(2)
def test_new_connections_are_paced_per_address_and_a_login_gives_its_token_back():
    doorway = small_doorway()
    taken = [doorway.refusal("10.0.0.2", now=0) for _ in range(NEW_CONNECTIONS_BURST_PER_ADDRESS + 1)]
    assert taken == [None] * NEW_CONNECTIONS_BURST_PER_ADDRESS + [TOO_MANY_NEW_CONNECTIONS]
    assert doorway.refusal("10.0.0.3", now=0) is None          # another address has its own budget
    assert doorway.refusal("10.0.0.2", now=1 / NEW_CONNECTIONS_PER_SECOND_PER_ADDRESS) is None   # the pace
    # Honest clients from one address: each logs in and gives its token back.
    for i in range(10 * NEW_CONNECTIONS_BURST_PER_ADDRESS):
        assert doorway.refusal("10.0.0.1", now=0) is None
        doorway.arrive(i, "10.0.0.1", now=0)
        doorway.handshake_done(i, now=0)
        assert doorway.check_password(i, "10.0.0.1", lambda: "alice", lambda future: None)
        doorway.leave(i)
    # A handshake that never logs in (a replay older than the memory looks like one) keeps its token spent.
    for i in range(NEW_CONNECTIONS_BURST_PER_ADDRESS):
        assert doorway.refusal("10.0.0.4", now=0) is None
        doorway.arrive(("replay", i), "10.0.0.4", now=0)
        doorway.handshake_done(("replay", i), now=0)
    assert doorway.refusal("10.0.0.4", now=0) == TOO_MANY_NEW_CONNECTIONS


@pytest.mark.points(2)
def test_a_replayed_first_handshake_record_is_refused_for_a_day_and_the_memory_forgets_its_oldest():
    assert (MAX_REMEMBERED_HANDSHAKES, REPLAY_MEMORY_SECONDS) == (16384, 86400)   # as docs/protocol.md says
    now = [0.0]
    doorway = small_doorway(clock=lambda: now[0])
    recent = doorway.handshakes
    assert recent.refusal(b"A" * 32) is None
    recent.remember(b"A" * 32)
    for later in (HANDSHAKE_TIMEOUT_SECONDS + 0.1, 3600.0, REPLAY_MEMORY_SECONDS - 1):   # long after any deadline
        now[0] = later
        assert recent.refusal(b"A" * 32) == "a replayed handshake: its first record was used before"
    now[0] = REPLAY_MEMORY_SECONDS   # a day on: forgotten; a replay now spends its address's paced budget
    assert recent.refusal(b"A" * 32) is None and len(recent) == 0
    # Bounded: past max_remembered the oldest is forgotten; no newcomer is refused for it being full.
    small = RecentHandshakes(lambda: now[0], window_seconds=REPLAY_MEMORY_SECONDS, max_remembered=3)
    for key in (b"A", b"B", b"C", b"D"):
        assert small.refusal(key * 32) is None
        small.remember(key * 32)
    assert len(small) == 3 and small.refusal(b"A" * 32) is None
    assert all("replayed" in small.refusal(key * 32) for key in (b"B", b"C", b"D"))


@pytest.mark.points(1)
def test_notes_beyond_the_budget_are_counted_and_said_in_one_line():
    said = []
    notes = NoteBudget(said.append, now=0, rate=2)
    for i in range(5):
        notes.note(f"stranger {i} closed", now=0)
    assert said == ["stranger 0 closed", "stranger 1 closed"] and notes.held_back == 3
    notes.tick(now=0.1)   # no room yet: nothing more is said
    assert len(said) == 2
    notes.tick(now=1.0)
    assert said[2] == "3 more notes about connections held back (at most 2 a second)"
    assert notes.held_back == 0


@pytest.mark.points(1)
def test_an_ipv6_source_counts_as_its_64_an_ipv4_one_alone_and_a_mapped_one_as_ipv4():
    assert IPV6_PREFIX_BITS == 64
    assert address_key("10.0.0.5") == "10.0.0.5" and address_key("10.0.0.6") == "10.0.0.6"
    assert address_key("::ffff:10.0.0.5") == "10.0.0.5"   # an IPv4 client of a dual-stack server
    assert address_key("2001:db8:1:2::5") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert address_key("2001:DB8:1:3::5") == "2001:db8:1:3::/64"   # the next /64: someone else
    assert address_key("fe80::1%eth0") == "fe80::1%eth0" and address_key("::1") == "::/64"
    assert address_key("2001:db8:1:2::/64") == "2001:db8:1:2::/64"   # a key is its own key
    assert address_key("a source") == "a source"


@pytest.mark.points(2)
def test_the_doorway_paces_and_bans_a_whole_ipv6_64_as_one_address():
    doorway = small_doorway()
    # One host picking a new address of its /64 for every connection still spends one budget.
    taken = [doorway.refusal(f"2001:db8:1:2::{i + 1:x}", now=0) for i in range(NEW_CONNECTIONS_BURST_PER_ADDRESS + 1)]
    assert taken == [None] * NEW_CONNECTIONS_BURST_PER_ADDRESS + [TOO_MANY_NEW_CONNECTIONS]
    assert doorway.refusal("2001:db8:1:3::1", now=0) is None   # another /64 has its own
    for i in range(SMALL.strangers_per_address + 1):   # and one cap among the strangers
        doorway.arrive(i, f"2001:db8:1:3::{i + 1:x}", now=0)
    assert len(doorway.strangers) == SMALL.strangers_per_address
    doorway.ban("2001:db8:1:3::99")
    assert doorway.refusal("2001:db8:1:3:abcd::1", now=1) == BANNED and doorway.is_banned("2001:db8:1:3::7")
    assert not doorway.is_banned("2001:db8:1:4::1") and not doorway.is_banned("10.0.0.1")
