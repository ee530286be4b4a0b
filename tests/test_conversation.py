"""A whole conversation through the real core, wired in memory (no sockets):
handshake, registration, login, room chat, a DM and an ignore."""
import pytest

from common.errors import ProtocolError
from common.messages import ChangeName, IgnoreUser, Login, PrivateMessage, Register, Say, UnignoreUser
from tests.memory_link import MemoryClient, MemoryServer


@pytest.fixture
def server():
    return MemoryServer()


def member(server, name, password="a good password"):
    client = MemoryClient(server)
    assert client.session.established
    client.send(Register(name, password))
    assert client.name == name
    return client


@pytest.mark.points(3)
def test_whole_conversation_gives_every_member_the_same_room_transcript(server):
    alice, bob = member(server, "alice"), member(server, "bob")
    alice.send(Say("hi bob"))
    bob.send(Say("hi alice"))
    carol = member(server, "carol")                  # a late joiner gets the history first
    carol.send(Say("what did I miss?"))
    room_lines = [[line for line in c.screen if line.startswith("#")] for c in (alice, bob, carol)]
    assert room_lines[0] == ["#1 * alice joined", "#2 * bob joined", "#3 alice: hi bob",
                             "#4 bob: hi alice", "#5 * carol joined", "#6 carol: what did I miss?"]
    assert room_lines[0] == room_lines[1] == room_lines[2]
    assert alice.transcript.digest() == bob.transcript.digest() == carol.transcript.digest()


@pytest.mark.points(2)
def test_dm_reaches_only_its_recipient(server):
    alice, bob, carol = member(server, "alice"), member(server, "bob"), member(server, "carol")
    alice.send(PrivateMessage("alice", "bob", "just for you"))
    assert "[DM alice -> bob] just for you" in bob.screen
    assert "[DM alice -> bob] just for you" in alice.screen          # the sender's confirmation
    assert not any("just for you" in line for line in carol.screen)


@pytest.mark.points(2)
def test_ignored_user_gets_no_private_message_and_is_hidden_in_the_room(server):
    alice, bob = member(server, "alice"), member(server, "bob")
    bob.send(IgnoreUser("alice"))
    alice.send(PrivateMessage("alice", "bob", "are you there?"))
    assert not any("are you there" in line for line in bob.screen)
    assert "! your message to bob was not delivered" in alice.screen
    alice.send(Say("hello room"))
    assert "(hidden" in bob.screen[-1] and alice.screen[-1].endswith("alice: hello room")
    assert alice.transcript.digest() == bob.transcript.digest()        # same numbering, same log
    bob.send(UnignoreUser("alice"))
    alice.send(PrivateMessage("alice", "bob", "now?"))
    assert "[DM alice -> bob] now?" in bob.screen


@pytest.mark.points(2)
def test_ignore_list_is_restored_at_the_next_login(server):
    bob = member(server, "bob", "bob's password")
    member(server, "alice")
    bob.send(IgnoreUser("alice"))
    server.leave(bob.conn)
    bob_again = MemoryClient(server)
    bob_again.send(Login("bob", "bob's password"))
    assert bob_again.ignored == ("alice",)


@pytest.mark.points(1)
def test_wrong_password_is_refused(server):
    member(server, "alice", "the right one")
    intruder = MemoryClient(server)
    with pytest.raises(ProtocolError, match="login failed"):
        intruder.send(Login("alice", "a wrong one"))


@pytest.mark.points(2)
def test_a_rename_is_a_numbered_event_that_leaves_earlier_lines_as_they_were(server):
    alice, bob = member(server, "alice"), member(server, "bob")
    alice.send(Say("before"))
    alice.send(ChangeName("Ally"))
    alice.send(Say("after"))
    assert alice.screen[-3:] == ["#3 alice: before", "#4 * alice is now ally", "#5 ally: after"]
    assert bob.screen[-3:] == alice.screen[-3:] and bob.transcript.digest() == alice.transcript.digest()
    assert bob.roster.names() == alice.roster.names() == ["server", "ally", "bob"]


@pytest.mark.points(2)
def test_a_renamed_member_cannot_escape_an_ignore(server):
    alice, bob = member(server, "alice"), member(server, "bob")
    bob.send(IgnoreUser("alice"))
    alice.send(ChangeName("not_alice"))
    alice.send(Say("it is not me"))
    alice.send(PrivateMessage("not_alice", "bob", "psst"))
    assert "(hidden" in bob.screen[-1] and not any("psst" in line for line in bob.screen)
    assert "! your message to bob was not delivered" in alice.screen


@pytest.mark.points(2)
def test_ignoring_a_shown_name_ignores_the_account_behind_it(server):
    alice, bob = member(server, "alice"), member(server, "bob")
    alice.send(ChangeName("ally"))
    bob.send(IgnoreUser("ally"))
    assert bob.ignored == ("alice",)


@pytest.mark.points(2)
@pytest.mark.parametrize("taken", ["bob", "server", "carol", "alice"])
def test_a_member_cannot_take_a_name_in_use_or_another_accounts(server, taken):
    alice, _bob = member(server, "alice"), member(server, "bob")
    member(server, "carol")
    server.leave(3)                                  # carol's account exists, carol is gone
    alice.send(ChangeName(taken))
    assert alice.screen[-1] in (f"! {taken} is taken", "! you are alice already")
    assert list(server.room.log)[-1].kind.value != "rename"


@pytest.mark.points(2)
def test_a_late_joiner_of_a_long_room_sees_one_line_for_what_is_not_kept_and_ends_with_the_same_hash():
    server = MemoryServer(history_events=8)
    alice, bob = member(server, "alice"), member(server, "bob")
    bob.send(ChangeName("bobby"))
    for i in range(20):
        (alice if i % 2 else bob).send(Say(f"line {i}"))
    carol = member(server, "carol")
    carol.send(IgnoreUser("bob"))                    # an account that renamed before carol's window
    bob.send(Say("after carol came"))
    carol_lines = [line for line in carol.screen if line.startswith(("#", "~#"))]
    assert carol_lines[0] == "#15 * 15 earlier messages not kept"
    assert carol_lines[1:] == [line for line in alice.screen if line.startswith("#")][15:-1] + [
        "~#25 (hidden: a message from someone you ignore)"]
    assert carol.members == ["server", "alice", "bobby"]
    assert carol.transcript.summary() == alice.transcript.summary() == bob.transcript.summary()
