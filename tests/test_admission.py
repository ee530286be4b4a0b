"""The limits on strangers and on logins, without sockets (common/admission.py)."""
from concurrent.futures import Future

import pytest

from common.admission import (
    HANDSHAKE_TIMEOUT_SECONDS, LOGIN_TIMEOUT_SECONDS, Doorway, LoginQueue, NoteBudget, PendingConnections,
    TokenBucket,
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


@pytest.mark.points(1)
def test_pending_connections_expire_at_their_deadline_which_the_next_step_moves():
    pending = PendingConnections(max_total=10, max_per_source=10)
    pending.admit("slow", "10.0.0.1", deadline=5)
    pending.admit("quick", "10.0.0.1", deadline=5)
    pending.extend("quick", 15)                  # finished its handshake: time to log in
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
        self.evicted = []
        self.queue = LoginQueue(ManualWorkers().submit, workers=1, max_queued=4, max_queued_per_source=3,
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


@pytest.mark.points(2)
def test_the_doorway_gives_a_deadline_per_step_and_frees_a_queued_login_from_it():
    workers = ManualWorkers()
    doorway = Doorway(workers.submit, workers=1, on_evicted=lambda owner: None)
    for conn in ("stranger", "slow", "quick"):
        assert doorway.arrive(conn, "10.0.0.1", now=0) == []
    doorway.handshake_done("slow", now=1)
    doorway.handshake_done("quick", now=1)
    assert doorway.check_password("quick", "10.0.0.1", lambda: "quick", lambda future: None)
    assert doorway.late(now=HANDSHAKE_TIMEOUT_SECONDS) == ["stranger"]
    # Queued, "quick" has no deadline: the login queue bounds it instead.
    assert doorway.late(now=1 + LOGIN_TIMEOUT_SECONDS) == ["stranger", "slow"]
    doorway.leave("stranger")
    doorway.leave("slow")
    assert doorway.late(now=1000) == []


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
