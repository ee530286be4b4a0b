"""The instructor's controls over a Lab 2 room, typed into the server's
stdin as an instructor types them at its terminal: /kick, /mute, /unmute,
/ban; and the idle limit. Real processes and sockets on loopback; a member
to be banned connects from another loopback address (127.0.0.2: all of
127.0.0.0/8 is this machine), as if from another computer. Every wait has a
deadline; no test sleeps.
"""
from __future__ import annotations

import threading

import pytest

from common.messages import Goodbye, Login, LoginAccepted, LoginRejected, Register, RepairRequest, RoomKey
from tests.raw_peer import receive_until, send_queued
from tests.test_lab2 import PASSWORD, raw_member, room  # noqa: F401
from tests.test_lab2_attacks import login_from, outcome
from tests.test_lab2_hostile import connect_from, handshake_from, read_until_closed

pytestmark = pytest.mark.network


@pytest.mark.points(3)
def test_a_kicked_member_is_told_why_and_the_room_sees_the_reason(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    server.wait_for_stdout(r"^#2 \* bob joined$")
    server.send_line("/kick bob spamming the room")
    for screen in (server, alice):
        screen.wait_for_stdout(r"^#3 \* bob was removed: spamming the room$")
    assert bob.wait_exit() == 0, bob.output()
    assert "the server said goodbye: you were removed from the room: spamming the room" in bob.stderr_lines
    alice.send_line("/who")
    alice.wait_for_stderr(r"^in the room: server, alice$")
    alice.send_line("still here")   # the room goes on, under a new key bob never got
    server.wait_for_stdout(r"^#4 alice: still here$")
    server.send_line("/kick nobody_here")
    server.wait_for_stderr(r"nobody in the room is called nobody_here")


@pytest.mark.points(3)
def test_a_muted_member_is_refused_until_unmuted_and_the_room_sees_both(room):
    server = room.start_server()
    alice, bob = room.join("alice"), room.join("bob")
    server.wait_for_stdout(r"^#2 \* bob joined$")
    server.send_line("/mute bob 5")
    for screen in (server, alice, bob):
        screen.wait_for_stdout(r"^#3 \* bob is muted for 5 min$")
    bob.send_line("let me talk")
    bob.send_line("/msg alice let me talk")
    refused = r"^! you are muted for 5 more min: your messages, DMs and renames are refused$"
    bob.wait_for_stderr(refused, count=2)
    server.send_line("/unmute bob")
    for screen in (server, alice, bob):
        screen.wait_for_stdout(r"^#4 \* bob may speak again$")
    bob.send_line("thank you")
    alice.wait_for_stdout(r"^#5 bob: thank you$")
    assert not any("let me talk" in line for line in alice.stdout_lines + server.stdout_lines), alice.output()


@pytest.mark.points(3)
def test_a_banned_address_is_dropped_and_refused_at_the_door_while_others_join(room):
    server = room.start_server()
    alice = room.join("alice")
    sock, session = login_from("127.0.0.2", room, Register("mallory", PASSWORD))   # a member at 127.0.0.2 ...
    receive_until(sock, session, [], RoomKey)
    pending, pending_session = handshake_from("127.0.0.2", room)   # ... and a login to come
    alice.wait_for_stdout(r"^#2 \* mallory joined$")
    server.send_line("/ban mallory")
    alice.wait_for_stdout(r"^#3 \* mallory was removed: banned until the server stops$")
    banned = Goodbye("you were removed from the room: banned until the server stops")
    assert banned in read_until_closed(sock, session)
    assert read_until_closed(pending, pending_session) == [banned]   # closed too, though it never logged in
    again = connect_from("127.0.0.2", room.port)
    assert again.recv(65536) == b""   # closed at once: no handshake, not even its first record read
    server.wait_for_stderr(r"^refused a connection from 127\.0\.0\.2:\d+: banned until the server stops$")
    room.join("carol")   # from 127.0.0.1: the ban is of one address
    alice.wait_for_stdout(r"^#4 \* carol joined$")
    for open_socket in (sock, pending, again):
        open_socket.close()


@pytest.mark.points(3)
def test_a_silent_member_is_removed_after_the_idle_limit_and_one_that_keeps_alive_is_not(room):
    room.add_setting("MAX_IDLE_SECONDS=3")
    server = room.start_server()
    reader_sock, reader_session, _ = raw_member(room, "alice")   # asks for what it missed, twice a second
    stop = threading.Event()

    def keep_alive() -> None:   # what a client's keepalive does, more often: the limit is short here
        while not stop.wait(0.5):
            reader_session.send(RepairRequest(1))
            try:
                send_queued(reader_sock, reader_session)
            except OSError:
                return   # closed: the assertions below say so
    keeper = threading.Thread(target=keep_alive)
    keeper.start()
    try:
        sleeper_sock, sleeper_session, _ = raw_member(room, "bob")   # says nothing at all
        server.wait_for_stdout(r"^#3 \* bob was removed: idle for 3 s$")
        assert Goodbye("you were removed from the room: idle for 3 s") in read_until_closed(
            sleeper_sock, sleeper_session)
        late_sock, _, _ = raw_member(room, "carol")   # silent too: by its removal, alice has outlived two limits
        server.wait_for_stdout(r"^#5 \* carol was removed: idle for 3 s$")
        server.send_line("/who")
        server.wait_for_stderr(r"^in the room: server, alice$")
    finally:
        stop.set()
        keeper.join()
    assert [line for line in server.stdout_lines if " removed" in line] == [
        "#3 * bob was removed: idle for 3 s", "#5 * carol was removed: idle for 3 s"], server.output()
    for sock in (reader_sock, sleeper_sock, late_sock):
        sock.close()


@pytest.mark.points(3)
def test_one_student_filling_the_room_from_three_addresses_is_banned_and_honest_logins_get_in_again(room):
    """One student with members from several addresses, each within the
    per-address budget, fills the room: the budgets cannot tell that from a
    class, the instructor can. Honest logins from 127.0.0.1 are counted
    before the attack, during it, and after the bans."""
    per_address, attackers = 2, ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    room.add_setting(f"MAX_CLIENTS={1 + per_address * len(attackers)}")   # 250 and 20 by default
    room.add_setting(f"MAX_CLIENTS_PER_ADDRESS={per_address}")
    server = room.start_server()
    watcher = room.join("bob")   # an honest member, there all along
    honest_logins = 0            # alice's logins from 127.0.0.1 so far: each joins, then leaves

    def honest_login(attempts: int) -> tuple[int, list]:
        """alice logs in ``attempts`` times and leaves after each: (how many got in, the refusals)."""
        nonlocal honest_logins
        accepted, refusals = 0, []
        for _ in range(attempts):
            message = Register("alice", PASSWORD) if honest_logins == 0 else Login("alice", PASSWORD)
            sock, session = login_from("127.0.0.1", room, message)
            answer = outcome(sock, session)
            sock.close()
            if isinstance(answer, LoginAccepted):
                honest_logins += 1
                accepted += 1
                server.wait_for_stdout(r"^#\d+ \* alice left$", count=honest_logins)   # before the next login
            else:
                refusals.append(answer)
        return accepted, refusals

    assert honest_login(3) == (3, [])
    held = []
    for a, source in enumerate(attackers):
        for i in range(per_address):
            sock, session = login_from(source, room, Register(f"sock_{a}_{i}", PASSWORD))
            assert isinstance(outcome(sock, session), LoginAccepted), source
            held.append((sock, session))
    watcher.wait_for_stdout(r"^#\d+ \* sock_2_1 joined$")
    during = honest_login(3)
    assert during == (0, [LoginRejected("the room is full; try again later")] * 3), during
    for source in attackers:
        server.send_line(f"/ban {source}")
    removed = r"^#\d+ \* sock_\d_\d was removed: banned until the server stops$"
    for screen in (server, watcher):
        screen.wait_for_stdout(removed, count=len(held))
    banned = Goodbye("you were removed from the room: banned until the server stops")
    for sock, session in held:
        assert banned in read_until_closed(sock, session)
        sock.close()
    assert honest_login(3) == (3, [])   # before 3/3, during 0/3, after the bans 3/3
    watcher.send_line("/who")
    watcher.wait_for_stderr(r"^in the room: server, bob$")
