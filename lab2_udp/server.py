"""Lab 2 server: a chat room for many clients, relayed by UDP broadcast.

Run it:  python -m lab2_udp.server [--port 0] [--headless]

What this file demonstrates:
- One thread, one ``selectors`` loop, many TCP clients. Each client logs in
  over an encrypted session (Noise, see common/session.py) and sends its room
  messages, DMs, ignores and repair requests upstream over it.
- The server is the sequencer. It numbers every room event (common/room.py)
  and sends each one *once*, as a UDP datagram to the broadcast address: the
  network, not the server, makes a copy for every client. Under load, several
  events share one datagram, so one seal and one signature cover them all.
- Datagrams are sealed with a room key that only members get, and signed, so
  a member cannot forge the server's events. When a member leaves, the room
  key changes, so the leaver can no longer read the room.
- Every datagram carries the newest number; when the room is quiet, a
  heartbeat datagram every HEARTBEAT_INTERVAL_SECONDS does, so a client
  notices when the last event was lost and asks for it.
- Password hashes are slow on purpose, so logins run in worker threads
  (net.BackgroundWork) and the room never stalls.
- The server takes part: what you type is a numbered room message. Commands:
  /who, /nick NEWNAME, /hash, /quit (or Ctrl-X).
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import net
from common.accounts import AccountStore, Argon2Cost
from common.config import ConfigError, Settings, load_settings
from common.errors import ProtocolError
from common.framing import MAX_DATAGRAM_PLAINTEXT_BYTES, DatagramSealer
from common.messages import Goodbye, Login, LoginRejected, Register, RoomEvent, RoomKey, encode
from common.room import ROOM, Delivery, Room
from common.session import SecureSession
from common.transcript import Transcript, format_event
from common.ui import open_front_end

# --- Settings ------------------------------------------------------------------------

HEARTBEAT_INTERVAL_SECONDS = 0.25  # the longest the room stays silent
BATCH_WINDOW_MS = 3                # datagrams at most this often: each costs every receiver a signature check
LOGIN_WORKERS = 2              # password hashes run here, off the event loop
LOGIN_TIMEOUT_SECONDS = 30     # a connection that has not logged in by then is dropped
MAX_OUTGOING_BYTES = 1 << 20   # a client this far behind is not reading: drop it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab2_udp.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", help="address to listen on (default: SERVER_HOST from .env)")
    parser.add_argument("--port", type=int, help="TCP port; 0 lets the OS pick (default: LAB2_PORT)")
    parser.add_argument("--broadcast-addr", help="where room datagrams go (default: BROADCAST_ADDR)")
    parser.add_argument("--broadcast-port", type=int, help="their UDP port (default: BROADCAST_PORT)")
    parser.add_argument("--multicast", metavar="GROUP", help="send to this multicast group instead (default: MULTICAST_GROUP)")
    parser.add_argument("--name", default="server", help="the server's name in the room")
    parser.add_argument("--headless", action="store_true", help="no window: stdin and stdout")
    parser.add_argument("--env", default=".env", help="settings file (created with fresh keys if missing)")
    parser.add_argument("--db", help="sqlite3 file of accounts (default: DB_PATH)")
    return parser.parse_args(argv)


# --- Sockets and state ---------------------------------------------------------------

@dataclass(eq=False)
class Peer:
    """One client's TCP connection and its encrypted session."""
    sock: socket.socket
    session: SecureSession
    address: str
    logging_in: bool = False   # a password check is running in a worker
    closing: bool = False      # drop once the last words are sent
    connected_at: float = field(default_factory=time.monotonic)


class RoomServer:
    """The loop's state: sockets, peers, the room and the datagram sealer."""

    def __init__(self, args: argparse.Namespace, settings: Settings) -> None:
        self.settings = settings
        self.selector = selectors.DefaultSelector()
        self.listener = net.listening_socket(settings.host, settings.lab2_port)
        self.selector.register(self.listener, selectors.EVENT_READ, self.on_connect)
        # UDP needs no connection: one socket, allowed to send to a broadcast address (or a group).
        group = settings.multicast_group
        self.broadcaster = net.multicast_sender(settings.host) if group else net.broadcast_sender()
        self.broadcast_to = (group or settings.broadcast_addr, settings.broadcast_port)
        self.accounts = AccountStore(settings.db_path, Argon2Cost(
            memory_kib=settings.argon2_memory_kib, iterations=settings.argon2_iterations))
        self.room = Room(args.name, self.accounts, max_members=settings.max_clients,
                         max_messages_per_second=settings.max_messages_per_second)
        self.workers = net.BackgroundWork(self.selector, LOGIN_WORKERS)
        # A fresh signing key every run: clients get its public half at login.
        self.signing_key = Ed25519PrivateKey.generate()
        self.sealer = DatagramSealer(self.signing_key)
        self.room_key = self._new_room_key()
        self.peers: dict[Peer, None] = {}
        self.unsent: list[RoomEvent] = []     # logged, not yet broadcast
        self.unsent_bytes = 0
        self.last_broadcast_at = 0.0
        self.broadcast_error = ""
        self.transcript = Transcript()        # the server's own screen, hashed like a client's
        self.ui = None

    @property
    def address(self) -> str:
        return net.describe(self.listener.getsockname())

    # --- Connections ---------------------------------------------------------------------

    def on_connect(self, _mask: int) -> None:
        try:
            sock, addr = net.accept(self.listener)
        except OSError:   # the caller gave up already, or no file descriptors are left
            return
        if len(self.peers) >= 2 * self.settings.max_clients:
            sock.close()   # far more connections than members: refuse before any work
            return
        peer = Peer(sock, SecureSession.server(self.settings.psk, self.settings.server_private_key),
                    net.describe(addr))
        self.peers[peer] = None
        self.selector.register(sock, selectors.EVENT_READ, lambda mask: self.on_peer_ready(peer, mask))

    def on_peer_ready(self, peer: Peer, mask: int) -> None:
        # One bad client must never stop the server: whatever goes wrong with
        # this peer (a broken frame, a wrong key, a reset), we drop this peer.
        try:
            if mask & selectors.EVENT_READ:
                data = net.receive(peer.sock)
                if not data:   # an empty recv() means the peer closed its end
                    self.drop(peer, "closed the connection" + (" mid-record" if peer.session.in_the_middle_of_a_record else ""))
                    return
                for message in peer.session.receive(data):
                    if peer not in self.peers:   # a Goodbye earlier in this chunk closed it
                        return
                    self.handle_message(peer, message)
                    if len(peer.session.outgoing) > MAX_OUTGOING_BYTES:   # asks, never reads
                        raise ProtocolError("too many requests without reading the answers")
            self.flush(peer)
        except (ProtocolError, OSError) as error:
            self.drop(peer, str(error))

    def handle_message(self, peer: Peer, message) -> None:
        if isinstance(message, (Login, Register)):
            if peer.logging_in or peer in self.room.members:
                raise ProtocolError("already logged in")
            peer.logging_in = True
            check = self.accounts.register if isinstance(message, Register) else self.accounts.login
            self.workers.submit(lambda: check(message.name, message.password),
                                lambda future: self.on_login_checked(peer, future))
        elif isinstance(message, Goodbye):
            self.drop(peer, "left")
        else:
            self.deliver(self.room.handle(peer, message))

    def on_login_checked(self, peer: Peer, future: Future) -> None:
        """Back on the loop's thread: the worker has checked the password."""
        peer.logging_in = False
        if peer not in self.peers:
            return   # gave up while we were hashing
        try:
            name = future.result()
        except ProtocolError as error:
            peer.session.send(LoginRejected(str(error)))
            peer.closing = True
        else:
            welcome, *rest = self.room.join(peer, name)
            self.deliver([welcome])
            if isinstance(welcome.message, LoginRejected):
                peer.closing = True
            else:   # the room key right after LoginAccepted, before the history
                peer.session.send(self.room_key_message())
                self.deliver(rest)
                self.show_room_state()
        self.flush(peer)

    def drop(self, peer: Peer, reason: str) -> None:
        """Close one client; if it was a member, the room sees it leave."""
        if peer not in self.peers:
            return
        del self.peers[peer]
        self.selector.unregister(peer.sock)
        net.send_last_words_and_close(peer.sock, peer.session.outgoing)
        name = self.room.members.get(peer)
        if name is None:
            self.ui.show_note(f"{peer.address} disconnected: {reason}")
            return
        self.ui.show_note(f"{name} ({peer.address}) {reason}")
        leave = self.room.leave(peer)
        self.flush_room(force=True)  # what the leaver may still read goes out under the old key
        self.rotate_room_key()      # and from now on, the leaver cannot read the room
        self.deliver(leave)
        self.show_room_state()

    # --- Deliveries: TCP to one member, a datagram to the room ---------------------------

    def deliver(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            if delivery.to is ROOM:
                self.unsent.append(delivery.message)
                self.unsent_bytes += len(encode(delivery.message)) + 2
                self.show_on_own_screen(delivery.message)
            elif delivery.to in self.peers:
                delivery.to.session.send(delivery.message)   # queued: flush() sends it

    def flush(self, peer: Peer) -> None:
        if peer not in self.peers:
            return
        try:
            net.send_pending(self.selector, peer.sock, peer.session.outgoing)
        except OSError as error:
            self.drop(peer, str(error))
            return
        if len(peer.session.outgoing) > MAX_OUTGOING_BYTES:
            peer.session.outgoing.clear()
            self.drop(peer, "was dropped: it stopped reading its messages")
        elif peer.closing and not peer.session.outgoing:
            self.drop(peer, "login refused")

    def flush_room(self, force: bool = False) -> None:
        """Broadcast what was logged, packed into datagrams; send queued replies.

        Runs after every round of the loop and every BATCH_WINDOW_MS. Every
        receiver must check the signature of every datagram, so datagrams are
        what costs. After a quiet spell an event goes out at once; while the
        room is busy, events wait up to BATCH_WINDOW_MS (or until a datagram
        is full) and then share one datagram: one seal, one signature.
        """
        since_last = time.monotonic() - self.last_broadcast_at
        if self.unsent and (force or since_last >= BATCH_WINDOW_MS / 1000
                            or self.unsent_bytes >= MAX_DATAGRAM_PLAINTEXT_BYTES):
            events, self.unsent, self.unsent_bytes = self.unsent, [], 0
            self.broadcast(events)
        elif not self.unsent and since_last >= HEARTBEAT_INTERVAL_SECONDS:
            # The heartbeat, an empty batch, tells everyone the newest number,
            # so a client that lost the last event notices and asks for it.
            self.broadcast([])
        for peer in list(self.peers):   # sessions whose replies were queued this round
            if peer.session.outgoing:
                self.flush(peer)

    def on_tick(self) -> None:
        self.flush_room()
        # A connection that never logs in (a port scanner, a stuck program)
        # would hold a socket forever, and enough of them would fill the room.
        stalled = time.monotonic() - LOGIN_TIMEOUT_SECONDS
        for peer in [p for p in self.peers if p not in self.room.members and p.connected_at < stalled]:
            self.drop(peer, "did not log in in time")

    def broadcast(self, events: list[RoomEvent]) -> None:
        self.last_broadcast_at = time.monotonic()
        for batch in self.room.batches(events):
            try:
                self.broadcaster.sendto(self.sealer.seal(encode(batch)), self.broadcast_to)
            except OSError as error:   # e.g. no route: clients will repair over TCP
                if str(error) != self.broadcast_error:   # say it once, not per datagram
                    self.broadcast_error = str(error)
                    self.ui.show_note(f"broadcast failed: {error}; clients will repair over TCP")

    def rotate_room_key(self) -> None:
        self.room_key = self._new_room_key()
        for peer in list(self.room.members):
            peer.session.send(self.room_key_message())
            self.flush(peer)

    def room_key_message(self) -> RoomKey:
        return RoomKey(self.sealer.epoch, self.room_key, self.signing_key.public_key().public_bytes_raw())

    def _new_room_key(self) -> bytes:
        key = os.urandom(32)
        self.sealer.set_room_key(self.sealer.epoch + 1, key)
        return key

    # --- The server's own screen and keyboard ---------------------------------------------

    def show_on_own_screen(self, event: RoomEvent) -> None:
        for shown in self.transcript.receive([event], event.seq):
            self.ui.show_text(format_event(shown), shown.sender)

    def member_names(self) -> list[str]:
        """The server first, then the members: what /who and the member list show."""
        return [self.room.server_name, *sorted(self.room.members.values())]

    def show_room_state(self) -> None:
        self.ui.set_status(f"{self.room.server_name}: {len(self.room.members)} members, encrypted; "
                           f"TCP {self.address}, broadcast port {self.broadcast_to[1]}")
        self.ui.set_members(self.member_names())

    def on_submit(self, text: str) -> None:
        command, _, argument = text.strip().partition(" ")
        try:
            if command == "/who":
                self.ui.show_note("in the room: " + ", ".join(self.member_names()))
            elif command == "/hash":
                self.ui.show_note(self.transcript.summary())
            elif command == "/nick":
                self.deliver(self.room.rename_server(argument))
                self.show_room_state()
            else:
                self.deliver(self.room.server_says(text))
        except ProtocolError as error:
            self.ui.show_note(str(error))
        self.flush_room()

    def on_quit(self) -> None:
        """Tell every client goodbye and close. No leave events, no new room
        keys: the room itself is going away."""
        for peer in self.peers:
            peer.session.send(Goodbye("the server is shutting down"))
            self.selector.unregister(peer.sock)
            net.send_last_words_and_close(peer.sock, peer.session.outgoing)
        self.peers.clear()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {"SERVER_HOST": args.host, "LAB2_PORT": args.port, "BROADCAST_ADDR": args.broadcast_addr,
                 "BROADCAST_PORT": args.broadcast_port, "DB_PATH": args.db, "MULTICAST_GROUP": args.multicast}
    try:
        settings = load_settings(args.env, {k: None if v is None else str(v) for k, v in overrides.items()})
        if settings.server_private_key is None:
            raise ConfigError(f"{args.env} has no SERVER_PRIVATE_KEY: is this a client's copy?")
        server = RoomServer(args, settings)
    except (ConfigError, OSError, ProtocolError) as error:
        print(f"cannot start the server: {error}", file=sys.stderr)
        return 2
    server.ui = open_front_end(f"Lab 2 room: {args.name}", server.on_submit, server.on_quit,
                               headless=args.headless, poll_interval_ms=settings.poll_interval_ms)
    server.show_room_state()
    print(f"listening on {server.address}, broadcasting to {net.describe(server.broadcast_to)}",
          file=sys.stderr, flush=True)
    server.ui.run(server.selector, tick=server.on_tick, tick_interval_ms=BATCH_WINDOW_MS,
                  after_events=server.flush_room)
    server.workers.close()
    server.accounts.close()
    print(server.transcript.summary(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
