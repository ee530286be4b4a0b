"""Client-side ordering: any schedule of loss, duplication, reordering and
late joining ends with the server's log, delivered in order."""
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ProtocolError
from common.framing import DatagramOpener, DatagramSealer, KeyNotYetHere
from common.messages import EventKind, HistoryStart, RoomBatch, RoomEvent, decode, encode
from common.transcript import (
    DEAF_AFTER_SECONDS, MAX_EARLY_DATAGRAM_SECONDS, MAX_EARLY_DATAGRAMS, REPAIR_GRACE_SECONDS, REPAIR_RETRY_SECONDS,
    UNPROVEN_OPENS_PER_SECOND, EMPTY_HASH,
    DatagramGate, EarlyDatagrams, HiddenRun, Roster, Transcript, chain_hash, format_event, format_hidden_run,
    read_room_datagram, show_events, start_history,
)

LOG = [RoomEvent(seq, "say", f"user{seq % 3}", f"message {seq}") for seq in range(1, 41)]


@pytest.mark.points(1)
def test_events_in_order_are_delivered_at_once():
    transcript = Transcript()
    assert transcript.receive(LOG[:3], 3) == LOG[:3]
    assert not transcript.has_gap


@pytest.mark.points(1)
def test_duplicates_are_dropped():
    transcript = Transcript()
    transcript.receive(LOG[:2])
    assert transcript.receive(LOG[:2]) == []
    assert transcript.receive([LOG[2], LOG[2]]) == [LOG[2]]


@pytest.mark.points(2)
def test_an_early_event_waits_for_the_gap_to_fill():
    transcript = Transcript()
    assert transcript.receive([LOG[2]]) == []
    assert transcript.has_gap
    assert transcript.receive([LOG[1]]) == []
    assert transcript.receive([LOG[0]]) == LOG[:3]


@pytest.mark.points(2)
def test_a_heartbeat_reveals_a_lost_last_message():
    transcript = Transcript()
    transcript.receive(LOG[:5], 5)
    transcript.receive([], latest_seq=6)        # event 6 was lost; the heartbeat says it exists
    assert transcript.has_gap
    assert transcript.repair_due(now=0.0) is None                         # grace period first
    assert transcript.repair_due(now=REPAIR_GRACE_SECONDS) == 5             # then: "after 5, please"


@pytest.mark.points(1)
def test_repair_requests_are_not_repeated_while_one_is_on_its_way():
    transcript = Transcript()
    transcript.receive([LOG[1]])
    transcript.repair_due(0.0)
    assert transcript.repair_due(REPAIR_GRACE_SECONDS) == 0
    assert transcript.repair_due(REPAIR_GRACE_SECONDS + REPAIR_RETRY_SECONDS / 2) is None
    assert transcript.repair_due(REPAIR_GRACE_SECONDS + REPAIR_RETRY_SECONDS) == 0


@pytest.mark.points(1)
def test_equal_transcripts_have_equal_digests_and_different_ones_differ():
    a, b, c = Transcript(), Transcript(), Transcript()
    a.receive(LOG[:10])
    b.receive(reversed(LOG[:10]))
    c.receive(LOG[:9] + [RoomEvent(10, "say", "mallory", "changed")])
    assert a.digest() == b.digest() != c.digest()


@st.composite
def network_schedules(draw):
    """A late-join point, then each datagram: lost, delivered, or delivered twice, in a shuffled order."""
    join_after = draw(st.integers(0, len(LOG)))
    copies = []
    for event in LOG[join_after:]:
        copies += [event] * draw(st.sampled_from([0, 1, 1, 1, 2]))
    return join_after, draw(st.permutations(copies))


@pytest.mark.points(3)
@settings(max_examples=300)
@given(network_schedules(), st.data())
def test_any_loss_duplication_reordering_and_late_join_ends_equal_to_the_log(schedule, data):
    join_after, datagrams = schedule
    transcript = Transcript()
    delivered = transcript.receive(LOG[:join_after], join_after)   # history over TCP
    clock = 0.0
    for event in datagrams:
        delivered += transcript.receive([event], event.seq)
        assert delivered == LOG[:len(delivered)]                  # always a prefix of the log
        clock += data.draw(st.sampled_from([0.0, 0.01, 0.1]))
        after = transcript.repair_due(clock)
        if after is not None and data.draw(st.booleans()):         # some repairs get lost too
            delivered += transcript.receive(LOG[after:], len(LOG))
    transcript.receive([], len(LOG))                                # the heartbeat
    while transcript.has_gap:                                       # repairs until done
        clock += REPAIR_RETRY_SECONDS
        after = transcript.repair_due(clock)
        if after is not None:
            delivered += transcript.receive(LOG[after:], len(LOG))
    assert delivered == LOG


@pytest.mark.points(2)
def test_the_gate_opens_the_servers_host_only_and_trusts_the_port_of_the_last_genuine_datagram():
    gate = DatagramGate()
    gate.server_host = "10.0.0.1"
    assert not gate.worth_opening(("10.0.0.66", 5555), now=0.0)           # another host: never
    replayer, server = ("10.0.0.1", 4444), ("10.0.0.1", 5555)
    assert gate.worth_opening(replayer, now=0.0)                           # a replay gets in first ...
    gate.opened(replayer)
    budget = 0
    while gate.worth_opening(server, now=0.0) and budget < 100:            # ... but the server's port
        gate.rejected(server, now=0.0)                                     #     keeps a budget
        budget += 1
    assert 0 < budget < 100
    assert gate.worth_opening(server, now=1.0)                             # a second later, its next
    gate.opened(server)                                                    # genuine datagram takes
    assert all(gate.worth_opening(server, now=1.0) for _ in range(1000))   # the trust back
    assert gate.counts["ignored"] >= 1


@pytest.mark.points(2)
def test_the_gate_chooses_the_servers_own_datagrams_first_and_a_flood_only_within_its_budget():
    gate = DatagramGate()
    gate.server_host = "10.0.0.1"
    server, forger = ("10.0.0.1", 5555), ("10.0.0.1", 4444)   # the server's host, another port
    gate.opened(server)
    flood = [(b"forged %d" % i, forger) for i in range(1000)]
    genuine = [(b"genuine %d" % i, server) for i in range(3)]
    chosen = []
    for datagram, source in gate.choose(flood[:500] + genuine[:2] + flood[500:] + genuine[2:], now=0.0):
        chosen.append(datagram)
        if source == forger:
            gate.rejected(source, now=0.0)   # opened, each forgery fails: the budget of the rest shrinks
    assert chosen[:3] == [b"genuine 0", b"genuine 1", b"genuine 2"]
    assert len(chosen) == 3 + UNPROVEN_OPENS_PER_SECOND
    assert gate.counts["ignored"] == 1000 - UNPROVEN_OPENS_PER_SECOND


@pytest.mark.points(1)
def test_a_gate_to_a_server_on_loopback_opens_datagrams_from_this_hosts_other_addresses_only():
    own = {"192.168.1.20", "10.0.0.1"}   # this machine's interfaces (net.is_own_address asks the OS)
    gate = DatagramGate(lambda address: address in own)
    gate.server_host = "127.0.0.1"
    # macOS: a group multicast on loopback may arrive from en0's address: the same machine.
    assert gate.worth_opening(("192.168.1.20", 5555), now=0.0)
    assert gate.worth_opening(("::1", 5555), now=0.0)
    assert not gate.worth_opening(("192.168.1.66", 5555), now=0.0)         # another host: never
    gate.server_host = "10.0.0.2"                                          # a server elsewhere:
    assert not gate.worth_opening(("10.0.0.1", 5555), now=0.0)             # our own address is not it


@pytest.mark.points(1)
def test_a_member_that_hears_nothing_asks_the_server_for_the_room_again_and_again():
    transcript, deaf = Transcript(), DEAF_AFTER_SECONDS
    transcript.heard(0.0)
    assert not transcript.is_deaf(deaf - 0.1) and transcript.repair_due(deaf - 0.1) is None
    assert transcript.is_deaf(deaf)
    assert transcript.repair_due(deaf) == 0
    assert transcript.repair_due(deaf + 0.1) is None                       # not more than 4 a second
    assert transcript.repair_due(deaf + 0.25) == 0


class Screen:
    """What show_events() writes to: the lines a front end would show, a run
    of hidden messages as one line that grows (as common/ui.py shows it)."""
    def __init__(self):
        self.lines = []
        self.hidden = HiddenRun()

    def show_text(self, line, sender):
        self.hidden.end()
        self.lines.append(line)

    def set_members(self, names):
        self.members = names

    def show_hidden(self, seq, sender):
        if self.hidden.continues(seq):
            self.lines.pop()
        self.hidden.add(seq)
        self.lines.append(self.hidden.line())


@pytest.mark.points(1)
def test_a_screen_hides_an_ignored_account_under_its_new_name_and_notes_member_changes():
    screen, roster = Screen(), Roster("server")
    joins = [RoomEvent(1, EventKind.JOIN, "mallory", ""), RoomEvent(2, EventKind.RENAME, "mallory", "mal")]
    assert show_events(screen, roster, joins, ignored=frozenset({"mallory"}))   # the member list changed
    said = [RoomEvent(3, EventKind.SAY, "mal", "hi"), RoomEvent(4, EventKind.SAY, "server", "hello")]
    assert not show_events(screen, roster, said, ignored=frozenset({"mallory"}))
    assert screen.lines == ["#1 * mallory joined", "#2 * mallory is now mal",
                            "~#3 (hidden: a message from someone you ignore)", "#4 server: hello"]
    assert roster.names() == ["server", "mal"]


@pytest.mark.points(1)
def test_a_name_given_back_shows_who_had_it_and_the_roster_follows_the_account():
    screen, roster = Screen(), Roster("server")
    events = [RoomEvent(1, EventKind.JOIN, "mallory", ""), RoomEvent(2, EventKind.RENAME, "mallory", "dave"),
              RoomEvent(3, EventKind.SAY, "dave", "hi"), RoomEvent(4, EventKind.RECLAIM, "dave", "mallory"),
              RoomEvent(5, EventKind.JOIN, "dave", "")]
    assert show_events(screen, roster, events)
    assert screen.lines[3:] == ["#4 * dave is mallory again: dave is an account's name", "#5 * dave joined"]
    assert roster.names() == ["server", "dave", "mallory"] and roster.account_of("dave") == "dave"
    assert roster.name_of("mallory") == "mallory"


@pytest.mark.points(1)
def test_hidden_messages_in_a_row_are_one_line_that_grows_and_anything_between_starts_another():
    screen, roster = Screen(), Roster("server")
    ignored = frozenset({"mallory"})
    show_events(screen, roster, [RoomEvent(1, EventKind.JOIN, "mallory", "")], ignored)
    spam = [RoomEvent(seq, EventKind.SAY, "mallory", "spam") for seq in range(2, 9)]
    show_events(screen, roster, spam[:3], ignored)
    assert screen.lines[1:] == ["~#2-#4 (3 hidden messages from people you ignore)"]
    show_events(screen, roster, spam[3:], ignored)                         # the next datagram: the same run
    assert screen.lines[1:] == ["~#2-#8 (7 hidden messages from people you ignore)"]
    show_events(screen, roster, [RoomEvent(9, EventKind.SAY, "server", "hello"),
                                 RoomEvent(10, EventKind.SAY, "mallory", "more")], ignored)
    assert screen.lines[1:] == ["~#2-#8 (7 hidden messages from people you ignore)", "#9 server: hello",
                                "~#10 (hidden: a message from someone you ignore)"]


@pytest.mark.points(1)
def test_a_run_of_hidden_messages_is_numbers_in_a_row_with_nothing_else_between():
    run = HiddenRun()
    assert not run.continues(12)                                           # no run yet
    run.add(12)
    assert run.line() == "~#12 (hidden: a message from someone you ignore)" == format_hidden_run(12, 12)
    for seq in range(13, 20):
        assert run.continues(seq)
        run.add(seq)
    assert run.line() == "~#12-#19 (8 hidden messages from people you ignore)"
    assert not run.continues(21)                                           # #20 was shown: a new run
    run.add(21)
    assert (run.first, run.last) == (21, 21)
    run.end()                                                              # a DM or a note was shown
    assert not run.continues(22)


@pytest.mark.points(1)
def test_a_sender_changing_its_port_each_time_shares_one_budget_with_every_other_port():
    gate = DatagramGate()
    gate.server_host = "10.0.0.1"
    gate.opened(("10.0.0.1", 5555))                                        # the server's proven source
    opened = 0
    for port in range(20000, 23000):                                       # a fresh port per forgery
        if gate.worth_opening(("10.0.0.1", port), now=0.0):
            gate.rejected(("10.0.0.1", port), now=0.0)
            opened += 1
    assert opened <= 10                                                    # one second's budget, not 3000
    assert gate.worth_opening(("10.0.0.1", 5555), now=0.0)                 # the server is still heard


# --- datagrams that overtake their room key ----------------------------------------------

def rekeyed_room():
    """A sealer at epoch 2 and an opener that holds only epoch 1's key."""
    signing_key = Ed25519PrivateKey.generate()
    sealer, opener = DatagramSealer(signing_key), DatagramOpener(signing_key.public_key().public_bytes_raw())
    old_key, new_key = bytes(range(32)), bytes(range(1, 33))
    sealer.set_room_key(1, old_key)
    opener.add_room_key(1, old_key)
    sealer.set_room_key(2, new_key)
    return sealer, opener, new_key


@pytest.mark.points(2)
def test_a_datagram_that_overtakes_its_room_key_is_held_and_opened_when_the_key_arrives():
    sealer, opener, new_key = rekeyed_room()
    batch = RoomBatch((RoomEvent(7, EventKind.SAY, "bob", "after the leave"),), 7)
    datagram = sealer.seal(encode(batch))
    early = EarlyDatagrams()
    with pytest.raises(KeyNotYetHere):             # epoch 2's key is still on its way over TCP
        read_room_datagram(opener, datagram)
    early.hold(datagram, ("127.0.0.1", 5000), now=10.0)
    opener.add_room_key(2, new_key)                 # ... and here it is
    [(released, source)] = early.release(now=10.2)
    assert source == ("127.0.0.1", 5000) and decode(opener.open(released)) == batch
    assert early.release(now=10.3) == []            # released once


@pytest.mark.points(1)
def test_only_next_epoch_datagrams_are_held_and_only_a_few_for_a_short_time():
    sealer, opener, _new_key = rekeyed_room()
    sealer.set_room_key(3, bytes(32))               # two epochs ahead: no key is on its way for it
    with pytest.raises(ProtocolError, match="no room key for epoch 3") as refusal:
        opener.open(sealer.seal(encode(RoomBatch((), 0))))
    assert not isinstance(refusal.value, KeyNotYetHere)
    early = EarlyDatagrams()
    for number in range(MAX_EARLY_DATAGRAMS + 5):   # a flood of them: only the newest are kept
        early.hold(bytes([number]), ("127.0.0.1", 5000), now=float(number) / 1000)
    released = early.release(now=(MAX_EARLY_DATAGRAMS + 4) / 1000)
    assert [datagram[0] for datagram, _ in released] == list(range(5, MAX_EARLY_DATAGRAMS + 5))
    early.hold(b"old", ("127.0.0.1", 5000), now=0.0)
    assert early.release(now=MAX_EARLY_DATAGRAM_SECONDS + 0.01) == []   # too old: dropped, repair finds it


@pytest.mark.points(2)
def test_a_transcript_started_from_a_handed_over_hash_ends_with_the_hash_of_one_that_saw_everything():
    early, late = Transcript(), Transcript()
    early.receive(LOG)
    running_hash = EMPTY_HASH
    for event in LOG[:25]:                          # what the server's window let fall out
        running_hash = chain_hash(running_hash, event)
    late.receive(LOG[20:24] + LOG[30:32])           # held early: the first four are then not needed
    assert late.start_at(25, running_hash)
    assert [e.seq for e in late.receive([], 40)] == []      # 26..30 still missing
    assert late.first_gap() == (26, 30)
    assert [e.seq for e in late.receive(LOG[25:])] == list(range(26, 41))
    assert late.digest() == early.digest() and late.summary() == early.summary() == f"transcript {early.digest()} 40"
    assert not late.start_at(25, EMPTY_HASH) and late.digest() == early.digest()   # past it: nothing changes


@pytest.mark.points(1)
def test_a_history_start_shows_one_numbered_line_and_the_members_of_that_moment():
    screen, roster = Screen(), Roster("")
    start = HistoryStart(RoomEvent(1200, EventKind.NOT_KEPT, "host", ""), bytes(32), ("ally alice", "bob"))
    roster = start_history(screen, Transcript(), roster, start)
    assert screen.lines == ["#1200 * 1200 earlier messages not kept"]
    assert screen.members == ["host", "ally", "bob"] == roster.names()
    assert roster.account_of("ally") == "alice" and roster.account_of("bob") == "bob"
    assert format_event(RoomEvent(1, EventKind.NOT_KEPT, "host", "")) == "#1 * 1 earlier message not kept"
