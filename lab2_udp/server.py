"""Lab 2 server: a chat room for many clients, relayed by UDP broadcast.

Run it:  python -m lab2_udp.server [--port 0] [--headless]

What this file demonstrates:
- One thread, one ``selectors`` loop, many TCP clients, each with an encrypted
  session (Noise, common/session.py) for its login, room messages, DMs,
  ignores and repair requests.
- The server is the sequencer: common/room.py numbers every room event and
  decides what goes out when; this file carries that out. Each event is sent
  *once*, as a UDP datagram to the broadcast address, and the network copies
  it to every client. Datagrams are sealed with a room key only members get
  (a new one when a member leaves) and signed, so no member can forge them.
- Password hashes are slow on purpose: logins run in worker threads, and the
  room never stalls; nor does it for a database another program holds locked:
  ignores are written in a thread of their own. Nobody who has not logged in
  can hold much: a few seconds, connections and queued logins per address
  (common/admission.py).
- The server takes part: what you type is a numbered room message. Commands:
  /who, /nick NEWNAME, /hash, /quit (or Ctrl-X); /kick, /mute, /unmute, /ban (common/controls.py).
"""
from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from concurrent.futures import Future
from functools import partial

from common import keylog, net
from common.net import Connection, Phase
from common.controls import OPERATOR_COMMANDS, YOU_ARE_BANNED, Operator
from common.accounts import AccountStore, slow_hashing_warning
from common.admission import BUSY_WITH_LOGINS, LAB2_LIMITS, Doorway, NoteBudget
from common.config import ConfigError, Settings, add_setting_options, settings_from
from common.errors import ProtocolError
from common.framing import DatagramSealer
from common.messages import Goodbye, Login, LoginRejected, Register, RoomBatch, encode, typed_text
from common.room import TICK_SECONDS, Broadcast, Delivery, Instruction, NewRoomKey, Room, StoreWrite
from common.session import BadRecord, SecureSession
from common.transcript import Roster, Transcript, show_events
from common.ui import add_front_end_options, open_front_end

# --- Settings ------------------------------------------------------------------------

# The limits on connections that have not logged in yet are in common/admission.py.
LOGIN_WORKERS = 2              # password hashes run here, off the event loop
MAX_OUTGOING_BYTES = 1 << 20   # a client this far behind is not reading: drop it
EXIT_OK, EXIT_FAILED = 0, 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab2_udp.server", description=__doc__.split("\n")[0])
    add_setting_options(parser, "SERVER_HOST", "LAB2_PORT", "BROADCAST_ADDR", "BROADCAST_PORT",
                        "MULTICAST_GROUP", "DB_PATH")
    parser.add_argument("--name", default="server", help="the server's name in the room")
    add_front_end_options(parser)   # --headless (no window), --wire (show every record and datagram)
    keylog.add_option(parser)    # --keylog FILE: the keys of each session, for the tests' wire story
    return parser.parse_args(argv)


# --- Sockets and state ---------------------------------------------------------------

class RoomServer:
    """The loop's state: sockets, peers, the room and the datagram sealer."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.settings = settings
        self.selector = selectors.DefaultSelector()
        self.listener = net.listening_socket(settings.host, settings.lab2_port)
        self.address = net.describe(self.listener.getsockname())
        # The doorway below paces new connections per address, and decides who must make room.
        self.acceptor = net.Acceptor(self.selector, self.listener, self.refusal, self.on_connect,
                                     note=lambda text: self.ui.show_note(text))
        # UDP needs no connection: one socket sends to the broadcast address (or a multicast group).
        # Whether that reaches this host is tried, not assumed: where loopback cannot broadcast
        # (macOS), the one-machine room goes to a multicast group instead, and members are told it.
        self.channel = net.open_room_channel(settings.host, settings.broadcast_addr, settings.broadcast_port,
                                             settings.multicast_group)
        self.broadcaster, self.broadcast_to = self.channel.sock, self.channel.address
        self.accounts = AccountStore.from_settings(settings)
        self.sealer = DatagramSealer()   # signs every datagram with a key made for this run
        self.room = Room.from_settings(args.name, self.accounts, self.sealer.signing_public_key, settings,
                                       multicast_group=self.channel.group)
        self.sealer.set_room_key(self.room.epoch, self.room.room_key)
        self.workers = net.BackgroundWork(self.selector, LOGIN_WORKERS)
        # Database writes (ignores) wait for any lock another program holds: never on the loop.
        # One thread, so that one member's changes are written in the order they were asked.
        self.writer = net.BackgroundWork(self.selector, 1)
        self.doorway = Doorway(LAB2_LIMITS, self.workers.submit, LOGIN_WORKERS, self.refuse_busy, time.monotonic)
        self.operator = Operator(self.room, self.doorway, settings.max_idle_seconds,
                                 lambda text: self.ui.show_note(text))
        self.peers: dict[Connection, None] = {}
        self.doomed: dict[Connection, str] = {}     # peers to drop once this round is done
        self.reported: set[str] = set()       # errors said once, not once per attempt
        self.notes = NoteBudget(lambda text: self.ui.show_note(text), time.monotonic())   # for non-members
        self.transcript = Transcript()        # the server's own screen, hashed like a client's
        self.roster = Roster(self.room.server_name)   # and its member list, from the same events
        self.ui = None

    # --- Connections ---------------------------------------------------------------------

    def refusal(self, addr: tuple) -> str | None:   # before anything is spent on the connection
        return self.doorway.refusal(addr[0], time.monotonic())

    def on_connect(self, sock: socket.socket, addr: tuple) -> None:
        address = net.describe(addr)
        session = SecureSession.server(self.settings.psk, self.settings.server_private_key, address,
                                       recent=self.doorway.handshakes)   # a replayed first record is refused
        peer = Connection(sock, session, address, source=addr[0])
        for evicted in self.doorway.arrive(peer, peer.source, time.monotonic()):
            self.drop(evicted, "made room for a newer connection")
        self.peers[peer] = None
        self.selector.register(sock, selectors.EVENT_READ, partial(self.on_peer_ready, peer))

    def on_peer_ready(self, peer: Connection, mask: int) -> None:
        # One bad client never stops the server: a broken frame, a wrong key, a reset drop this peer alone.
        if peer not in self.peers:   # dropped earlier in this round of events
            return
        try:   # a writable socket needs nothing here: after_round() sends what is queued
            # BEGIN SOLUTION
            # PROMPT: read what arrived (peer.read()); once the handshake is done, Phase.LOGIN and tell
            # PROMPT: self.doorway; handle each message, and stop once the peer is dropped or doomed. A
            # PROMPT: BadRecord still carries the genuine messages before the bad one: handle those, then raise it.
            if mask & selectors.EVENT_READ:
                try:
                    messages, failure = peer.read(), None   # an empty read (the peer closed its end) raises
                except BadRecord as error:   # the genuine records before the bad one still count
                    messages, failure = error.delivered, error
                if peer.phase is Phase.HANDSHAKE and peer.session.established:
                    peer.phase = Phase.LOGIN   # it holds the key: no stranger can take its place now
                    for evicted in self.doorway.handshake_done(peer, time.monotonic()):
                        self.drop(evicted, "made room for a newer connection")
                for message in messages:
                    self.handle_message(peer, message)
                    if peer not in self.peers or peer in self.doomed:   # a Goodbye or a refusal ended it
                        return
                if failure is not None:
                    raise failure
            # END SOLUTION
        except (ProtocolError, OSError) as error:
            self.drop(peer, net.describe_error(error))

    def handle_message(self, peer: Connection, message) -> None:
        handler = self.HANDLERS.get(type(message))
        if handler is not None:
            handler(self, peer, message)
        else:   # a request to the room: common/room.py raises if the peer is no member
            self.carry_out(self.room.handle(peer, message))

    def handle_goodbye(self, peer: Connection, message: Goodbye) -> None:
        self.drop(peer, "left")

    def handle_login(self, peer: Connection, message: Login | Register) -> None:
        if peer.phase is not Phase.LOGIN:
            raise ProtocolError("one login per connection")
        registering = isinstance(message, Register)   # new accounts never take every worker from logins
        check = self.accounts.register if registering else self.accounts.login
        if not self.doorway.check_password(peer, peer.source, partial(check, message.name, message.password,
                                           peer.source), partial(self.on_password_checked, peer), registering):
            return self.refuse_busy(peer)
        peer.phase = Phase.CHECKING

    HANDLERS = {Goodbye: handle_goodbye, Login: handle_login, Register: handle_login}

    def refuse_busy(self, peer: Connection) -> None:   # dropped at the end of the round, with these last words
        peer.session.send(LoginRejected(BUSY_WITH_LOGINS))
        self.doomed[peer] = "refused: too many logins at once"

    def on_password_checked(self, peer: Connection, future: Future) -> None:
        """Back on the loop's thread: a worker has checked a password."""
        if peer not in self.peers:
            return   # gave up while we were hashing
        try:   # this peer's error boundary: whatever fails here drops it alone
            name = future.result()
            self.carry_out(self.room.join(peer, name, peer.source))
            if peer not in self.room.members:
                return self.drop(peer, "login refused")
            peer.phase = Phase.MEMBER
            self.ui.show_note(f"{name} joined from {peer.address}")   # after_round() sends the welcome
        except (ProtocolError, OSError) as error:
            if not peer.session.outgoing:
                peer.session.send(LoginRejected(net.describe_error(error)))
            self.drop(peer, f"login refused: {net.describe_error(error)}")

    def drop(self, peer: Connection, reason: str) -> None:
        """Close one client; if it was a member, the room sees it leave."""
        self.doomed.pop(peer, None)
        if peer not in self.peers:
            return
        del self.peers[peer]
        self.doorway.leave(peer)
        peer.close(self.selector)
        name = self.room.members.get(peer)
        if name is not None:
            self.ui.show_note(f"{name} ({peer.address}) {reason}")
            self.room.leave(peer)   # the next tick re-keys the room and logs the leave
        elif peer.phase is not Phase.HANDSHAKE:   # strangers, who never proved the key, go unnoted
            self.notes.note(f"{peer.address} {reason}", time.monotonic())

    def remove(self, removed: dict[Connection, str]) -> None:
        """Close the members that the operator (/kick, /ban) or the idle limit removed, each told why;
        a ban closes every other connection from its address too."""
        for peer in [p for p in self.peers if p in removed or self.doorway.is_banned(p.source)]:
            peer.session.close(removed.get(peer, YOU_ARE_BANNED))   # a Goodbye: its last words
            self.drop(peer, "removed")

    # --- Carrying out what the room decided ----------------------------------------------

    def carry_out(self, instructions: list[Instruction]) -> None:
        # BEGIN SOLUTION
        # PROMPT: a Delivery goes on its member's session, a Broadcast is broadcast, a NewRoomKey to the sealer,
        # PROMPT: a StoreWrite to self.writer, whose outcome goes back to self.room.written().
        for instruction in instructions:
            if isinstance(instruction, Delivery) and instruction.to in self.peers:
                instruction.to.session.send(instruction.message)   # queued: after_round() sends it
            elif isinstance(instruction, Broadcast):
                self.broadcast(instruction.batch)
            elif isinstance(instruction, NewRoomKey):
                self.sealer.set_room_key(instruction.epoch, instruction.key)
            elif isinstance(instruction, StoreWrite):   # the answer comes back through the loop
                self.writer.submit(instruction.write, lambda outcome, to=instruction.to:
                                   self.carry_out(self.room.written(to, outcome)))
        # END SOLUTION

    def broadcast(self, batch: RoomBatch) -> None:
        # Our own screen shows what the clients' do, as they do.
        if show_events(self.ui, self.roster, self.transcript.receive(batch.events, batch.latest_seq)):
            self.show_room_state()
        # BEGIN SOLUTION
        # PROMPT: send the batch as one sealed UDP datagram to self.broadcast_to (the network copies it to
        # PROMPT: every member); note a failed send once, not once per datagram: clients repair over TCP.
        try:
            self.broadcaster.sendto(self.sealer.seal(encode(batch)), self.broadcast_to)
        except OSError as error:   # e.g. no route: clients will repair over TCP
            if str(error) not in self.reported:   # once, not once per datagram
                self.reported.add(str(error))
                self.ui.show_note(f"broadcast failed: {net.describe_error(error)}; clients will repair over TCP")
        # END SOLUTION

    def after_round(self) -> None:
        """After every round of events: broadcast, send what is queued, drop the
        doomed; repeat until nothing is left to do. A loop, not recursion:
        hundreds of members leaving at once cost one more turn, not one more
        stack frame each."""
        while True:
            self.carry_out(self.room.tick())
            for peer in [p for p in self.peers if p.session.outgoing]:
                try:
                    peer.flush(self.selector, MAX_OUTGOING_BYTES)
                except OSError as error:   # only marked: a drop sends to others (a new key), which may fail too
                    self.doomed[peer] = net.describe_error(error)
            if not self.doomed:
                return
            for peer, reason in list(self.doomed.items()):
                self.drop(peer, reason)

    def on_tick(self) -> None:
        self.acceptor.tick()   # accepting again after running out of file descriptors
        self.notes.tick(time.monotonic())
        # A connection that never logs in (a port scan, a stranger, a stuck program) would stay forever.
        for peer in self.doorway.late(time.monotonic()):
            self.drop(peer, f"did not finish its {peer.phase.value} in time")
        if removed := self.operator.tick(time.monotonic()):   # members idle too long
            self.remove(removed)
        self.after_round()

    # --- What the user does: the front end calls these ---------------------------------

    def show_room_state(self) -> None:
        names = self.roster.names()   # the server's own name first
        self.ui.set_status(f"{names[0]}: {len(names) - 1} member{'' if len(names) == 2 else 's'}, encrypted; "
                           f"TCP {self.address}, broadcast port {self.broadcast_to[1]}")
        self.ui.set_members(names)

    def on_submit(self, text: str) -> None:
        """A ProtocolError (a bad /nick, a refused text) goes to the front end, which says why."""
        command, _, argument = text.strip().partition(" ")
        if command == "/who":
            self.ui.show_note("in the room: " + ", ".join(self.roster.names()))
        elif command == "/hash":
            self.ui.show_note(self.transcript.summary())
        elif command == "/nick":
            self.room.rename_server(argument)
        elif command in OPERATOR_COMMANDS:   # /kick, /mute, /unmute, /ban: common/controls.py decides
            self.remove(self.operator.command(command, argument))
        else:
            self.room.server_says(typed_text(text, ("/who", "/nick", "/hash", *OPERATOR_COMMANDS, "/quit")))
        self.after_round()

    def on_quit(self) -> None:
        """Tell every client goodbye and close: the room itself is going away."""
        self.carry_out(self.room.tick(force=True))   # what was said goes out first
        for peer in list(self.peers):
            peer.session.close("the server is shutting down")   # a Goodbye, if it can read one
            peer.close(self.selector)
        self.peers.clear()

    # --- The loop: one thread, one selector, every socket ----------------------------------

    def turn(self, timeout: float | None) -> None:
        """Wait until sockets are ready (at most ``timeout`` s; a window passes POLL_INTERVAL_MS
        and redraws between turns), then run the handler each carries as ``key.data``. No longer than the room's
        waiting events may wait: they go out on time, not at the next tick."""
        due_in = self.room.wait_at_most()
        for key, mask in self.selector.select(due_in if timeout is None else min(timeout, due_in)):
            key.data(mask)
            if self.ui.stopped:   # a quit closed sockets that may still be in this list
                return
        self.after_round()   # what this round logged goes out: under load, many events a datagram


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args, for_server=True)
        server = RoomServer(args, settings)
    except (ConfigError, OSError, ProtocolError) as error:
        print(f"cannot start the server: {error}", file=sys.stderr)
        return EXIT_FAILED
    server.ui = open_front_end(f"Lab 2 room: {args.name}", server.on_submit, server.on_quit,
                               headless=args.headless, poll_interval_ms=settings.poll_interval_ms,
                               window_lines=settings.window_lines)
    server.show_room_state()
    print(f"listening on {server.address}, broadcasting to {net.describe(server.broadcast_to)}",
          file=sys.stderr, flush=True)
    for warning in filter(None, (slow_hashing_warning(), server.operator.idle_limit_warning())):
        print(warning, file=sys.stderr, flush=True)
    server.ui.show_note(server.channel.choice)   # what the room is sent to, and why
    server.ui.run(server.selector, server.turn, tick=server.on_tick,
                  tick_interval_ms=int(TICK_SECONDS * 1000))
    server.workers.close()
    server.writer.close()
    server.accounts.close()
    print(server.transcript.summary(), file=sys.stderr, flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
