"""Deliberately broken role files: each the bug a student might write, and the
black-box test that must catch it under its own name.

A mutant is a small patch, applied at test time to the *current* role file:
an anchor (text that occurs exactly once in it) and what replaces it. So a
mutant stays in step while the role files change; when its anchor is gone,
``mutate`` says exactly which mutant is stale and what it looked for.
tests/test_mutants.py runs the named test against each mutant and checks that
it fails, and that a grader reading the report sees the right reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAB1, LAB2 = "tests/test_lab1.py", "tests/test_lab2.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    role: str          # the module it breaks, e.g. "lab2_udp.client"
    anchor: str        # occurs exactly once in the role file
    replacement: str
    caught_by: str     # the test that must fail: "tests/test_lab2.py::test_..."
    bug: str           # the bug, as a student would have written it

    @property
    def role_file(self) -> Path:
        return ROOT / (self.role.replace(".", "/") + ".py")


class StaleMutant(Exception):
    """The role file no longer holds a mutant's anchor exactly once."""


def mutate(mutant: Mutant, source: str) -> str:
    """``source`` with the mutant's anchor replaced; StaleMutant if the anchor
    is not found exactly once."""
    count = source.count(mutant.anchor)
    if count != 1:
        raise StaleMutant(f"mutant {mutant.name!r} is stale: its anchor occurs {count} times in "
                          f"{mutant.role_file.relative_to(ROOT)}, not once; update tests/mutants.py.\n"
                          f"anchor: {mutant.anchor!r}")
    return source.replace(mutant.anchor, mutant.replacement)


MUTANTS = (
    Mutant(
        "lab2 client echoes its own text",
        "lab2_udp.client",
        "            else:\n                self.send(Say(typed_text(text, COMMANDS)))",
        "            else:\n                self.ui.show_text(f\"{self.name}: {text}\", self.name)\n"
        "                self.send(Say(typed_text(text, COMMANDS)))",
        f"{LAB2}::test_own_message_appears_only_when_numbered_by_the_server",
        "shows what the user typed at once, before the server has numbered it",
    ),
    Mutant(
        "lab2 client sends a DM as a room message",
        "lab2_udp.client",
        "self.send(PrivateMessage(self.name, recipient, checked_text(private_text)))",
        "self.send(Say(checked_text(f\"(to {recipient}) {private_text}\")))",
        f"{LAB2}::test_dm_reaches_only_its_recipient",
        "/msg goes to the whole room, addressed by a prefix",
    ),
    Mutant(
        "lab2 server sends a DM to every member",
        "lab2_udp.server",
        "            if isinstance(instruction, Delivery) and instruction.to in self.peers:\n",
        "            if isinstance(instruction, Delivery) and \"Private\" in type(instruction.message).__name__:\n"
        "                for member in self.room.members:\n"
        "                    member.session.send(instruction.message)\n"
        "            elif isinstance(instruction, Delivery) and instruction.to in self.peers:\n",
        f"{LAB2}::test_dm_reaches_only_its_recipient",
        "DMs are relayed to everyone, and each client is trusted to hide the others' DMs",
    ),
    Mutant(
        "lab2 client shows events as they arrive",
        "lab2_udp.client",
        "        self.show(self.transcript.receive(batch.events, batch.latest_seq))",
        "        self.transcript.receive(batch.events, batch.latest_seq)\n"
        "        self.show(batch.events)",
        f"{LAB2}::test_transcripts_match_through_a_lossy_network",
        "no ordering: datagrams are shown in arrival order, duplicates included",
    ),
    Mutant(
        "lab2 client never asks for missing events",
        "lab2_udp.client",
        "            self.send(RepairRequest(after_seq))",
        "            return",
        f"{LAB2}::test_transcripts_match_through_a_lossy_network",
        "no repair: a lost datagram is lost for good",
    ),
    Mutant(
        "lab2 client shows ignored members' text",
        "lab2_udp.client",
        "show_events(self.ui, self.roster, events, self.ignored)",
        "show_events(self.ui, self.roster, events)",
        f"{LAB2}::test_ignore_survives_a_server_restart",
        "no ignore: the ignore list is kept but never applied to the room",
    ),
    Mutant(
        "lab2 server writes the database on its loop",
        "lab2_udp.server",
        "                self.writer.submit(instruction.write, lambda outcome, to=instruction.to:\n"
        "                                   self.carry_out(self.room.written(to, outcome)))\n",
        "                outcome = Future()\n"
        "                try:\n"
        "                    outcome.set_result(instruction.write())\n"
        "                except ProtocolError as error:\n"
        "                    outcome.set_exception(error)\n"
        "                self.carry_out(self.room.written(instruction.to, outcome))\n",
        "tests/test_lab2_hostile.py::test_a_database_another_program_holds_locked_does_not_stop_the_room",
        "an ignore is saved on the event loop: a database another program locked stops the whole room",
    ),
    Mutant(
        "lab2 server refuses the owner of a name a member shows",
        "lab2_udp.server",
        "            self.carry_out(self.room.join(peer, name, peer.source))\n",
        "            if name in self.room.members.values():\n"
        "                raise ProtocolError(f\"{name} is already in the room\")\n"
        "            self.carry_out(self.room.join(peer, name, peer.source))\n",
        "tests/test_lab2_attacks.py::"
        "test_a_name_taken_before_its_account_existed_goes_back_and_its_owner_gets_in_and_gets_its_dms",
        "a login is refused when a member shows that name: whoever took a name by /nick before its "
        "account existed keeps it, and the owner is locked out of the room",
    ),
    Mutant(
        "lab2 server loses the genuine records read with a bad one",
        "lab2_udp.server",
        "                except BadRecord as error:   # the genuine records before the bad one still count\n"
        "                    messages, failure = error.delivered, error\n",
        "                except BadRecord:\n"
        "                    raise\n",
        "tests/test_lab2_hostile.py::"
        "test_a_genuine_message_read_together_with_a_tampered_record_is_said_then_the_peer_is_dropped",
        "a bad record drops the peer with everything that arrived in the same read: whether a genuine "
        "message counts depends on how TCP cut the stream",
    ),
    Mutant(
        "lab1 server forgets the first handshake records it has seen",
        "lab1_tcp.server",
        "address,\n                                       recent=self.doorway.handshakes)",
        "address)",
        f"{LAB1}::test_a_replayed_first_handshake_record_is_closed_unanswered",
        "a sniffed first handshake record, sent again, makes the server finish a handshake each time",
    ),
    Mutant(
        "lab2 server forgets the first handshake records it has seen",
        "lab2_udp.server",
        "address,\n                                       recent=self.doorway.handshakes)",
        "address)",
        "tests/test_lab2_attacks.py::test_a_replayed_first_handshake_record_gets_no_handshake",
        "a sniffed first handshake record, sent again, makes the server finish a handshake each time",
    ),
    Mutant(
        "lab2 client keeps its own hash past the events not kept",
        "lab2_udp.client",
        "        self.roster = start_history(self.ui, self.transcript, self.roster, message)\n",
        "        self.transcript.start_at(message.summary.seq, self.transcript.running_hash)\n",
        f"{LAB2}::test_a_late_joiner_past_the_servers_window_is_told_what_is_not_kept_and_has_the_same_hash",
        "a late joiner skips what the server no longer keeps, but with its own hash and member list: "
        "its /hash is nobody else's, and an ignore misses a member who renamed before it came",
    ),
    Mutant(
        "lab1 server trusts the sender a message claims",
        "lab1_tcp.server",
        "self.ui.show_line(peer.name, checked_text(message.text))",
        "self.ui.show_line(message.sender, checked_text(message.text))",
        f"{LAB1}::test_server_shows_the_logged_in_name_not_the_one_a_message_claims",
        "the name inside a ChatMessage is shown, so a client can speak as anyone",
    ),
    Mutant(
        "lab1 server keeps the checks of closed connections",
        "lab1_tcp.server",
        "        self.doorway.leave(peer)\n",
        "",
        f"{LAB1}::test_a_login_and_close_loop_leaves_no_password_checks_queued_behind_it",
        "a closed connection's password check stays queued: a Login-and-close loop fills the queue",
    ),
    Mutant(
        "lab1 server notes every stranger",
        "lab1_tcp.server",
        "self.notes.note(f\"{peer.name or peer.address} {why}\", time.monotonic())",
        "self.ui.show_note(f\"{peer.name or peer.address} {why}\")",
        f"{LAB1}::test_a_flood_of_strangers_does_not_become_a_flood_of_notes",
        "every closed connection is a line in the log: a stranger's flood fills the disk",
    ),
    Mutant(
        "lab1 server lets a second client in",
        "lab1_tcp.server",
        "        peer.session.send(Goodbye(BUSY_REASON))\n"
        "        self.drop(peer, \"told that we are busy\")\n",
        "        self.drop(self.partner, \"was replaced by a newcomer\")\n",
        f"{LAB1}::test_second_client_is_told_the_server_is_busy_and_the_chat_goes_on",
        "no busy check: the newcomer takes over the chat",
    ),
    Mutant(
        "lab1 client quits without a goodbye",
        "lab1_tcp.client",
        "        self.session.close(QUIT_REASON)   # a Goodbye, once the handshake is done\n",
        "",
        f"{LAB1}::test_ctrl_x_byte_sends_the_line_before_it_and_quits",
        "quitting just closes the socket: the server cannot tell a quit from a crash",
    ),
    Mutant(
        "lab1 client reads stdin before the login",
        "lab1_tcp.client",
        "        self.ui.set_input_enabled(False)\n",
        "",
        "tests/test_quit_paths.py::test_lab1_client_with_any_stdin_logs_in_then_leaves_at_its_end",
        "stdin is read from the start: a file's lines, or its end, arrive before there is a session to take them",
    ),
    Mutant(
        "lab1 server shuts down without a goodbye",
        "lab1_tcp.server",
        "            peer.session.close(SHUTDOWN_REASON)   # a Goodbye, if it can read one\n",
        "",
        f"{LAB1}::test_client_is_told_when_the_server_quits",
        "the server's /quit closes the chat without telling the client why",
    ),
    Mutant(
        "lab2 server keeps a slow cryptography to itself",
        "lab2_udp.server",
        "filter(None, (slow_hashing_warning(), server.operator.idle_limit_warning()))",
        "filter(None, (server.operator.idle_limit_warning(),))",
        "tests/test_dependencies.py::test_a_server_on_cryptography_before_50_starts_and_warns_once_that_logins_will_stall",
        "a server on cryptography 49 says nothing: the class's logins stall the room, and nobody knows why",
    ),
    Mutant(
        "lab1 server lets a protocol error escape",
        "lab1_tcp.server",
        "        except ProtocolError as error:\n            self.drop(peer, f\"dropped: {error}\")",
        "        except () as error:\n            self.drop(peer, f\"dropped: {error}\")",
        f"{LAB1}::test_garbage_never_stops_the_server_nor_the_chat",
        "no error boundary around one peer: garbage from one client stops the server",
    ),
    Mutant(
        "lab2 client ignores the room's multicast group",
        "lab2_udp.client",
        "            net.join_group(self.udp, message.group, self.gate.server_host)\n",
        "",
        f"{LAB2}::test_a_multicast_room_names_its_group_at_login_and_members_hear_it_by_datagram",
        "the client never joins the group the server names at login: on a Mac it hears only repairs",
    ),
    Mutant(
        "lab1 server prints past its front end",
        "lab1_tcp.server",
        "        self.ui.show_line(peer.name, checked_text(message.text))\n",
        "        print(f\"{peer.name}: {checked_text(message.text)}\", flush=True)\n",
        "tests/test_screens.py::test_lab1_roles_whose_stdout_fails_keep_chatting",
        "prints a line itself: a stdout that cannot be written (a pipe whose reader went) drops the partner",
    ),
    Mutant(
        "lab2 server removes a member without a word",
        "lab2_udp.server",
        "            peer.session.close(removed.get(peer, YOU_ARE_BANNED))   # a Goodbye: its last words\n",
        "",
        "tests/test_lab2_operator.py::test_a_kicked_member_is_told_why_and_the_room_sees_the_reason",
        "a kicked member is just closed: it says the server closed the connection, and never learns why",
    ),
)
