"""Lab 1 server: a one-to-one encrypted chat over TCP.

The server listens and waits. One client connects, runs the Noise handshake,
logs in (or registers first), and the two of you chat. Whoever completes the
handshake (or a login) while a chat is under way is told that the server is
busy, and is closed; the chat goes on undisturbed. When the client leaves,
the server waits for the next one.

What this file demonstrates:
- one thread, one ``selectors`` loop, non-blocking sockets, and an outgoing
  buffer sent when the socket is writable (common/net.py);
- a sans-IO session (common/session.py): bytes in, messages out, and a
  dispatch table from message class to handler;
- slow password hashing in a worker thread, its result back through the loop;
- one bad peer is dropped, and never stops the server;
- what a stranger without the key can cost us is bounded: time, connections,
  memory (docs/lab1.md, "What a stranger can and cannot do to the server").

Run it:  python -m lab1_tcp.server [--port 0] [--headless]   (--help lists every option)
"""
from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial

from common import keylog, net
from common.net import Connection, Phase
from common.accounts import AccountStore, normalise_name, slow_hashing_warning
from common.admission import HANDSHAKE_TIMEOUT_SECONDS, LAB1_LIMITS, LOGIN_TIMEOUT_SECONDS, Doorway, NoteBudget
from common.config import ConfigError, Settings, add_setting_options, settings_from
from common.errors import ProtocolError
from common.messages import ChatMessage, Goodbye, Login, LoginAccepted, LoginRejected, Register, checked_text
from common.session import BadRecord, SecureSession
from common.ui import add_front_end_options, open_front_end

# --- Settings ------------------------------------------------------------------------

DEFAULT_NAME = "server"
BUSY_REASON = "the server is busy with another chat; try again later"
SHUTDOWN_REASON = "the server is shutting down"
# Hashing a password takes 30-60 ms on purpose. One worker is enough for Lab 1:
# there is at most one client to log in.
PASSWORD_WORKERS = 1
# The chat slot belongs to a client that has logged in, never to a mere
# connection. Connections that have not logged in are bounded in time, number and
# rate per address, as in Lab 2 (common/admission.py, LAB1_LIMITS), so a port
# scanner, a stuck program or a stranger without the key cannot keep a member out,
# and a stranger never takes the place of a client that proved the key.
MAX_OUTGOING_BYTES = 1 << 20     # a peer this far behind has stopped reading: drop it
TICK_INTERVAL_MS = 500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab1_tcp.server",
        description="Lab 1 server: one-to-one encrypted chat over TCP. Settings not given "
                    "here come from the environment, then from the env file.")
    add_setting_options(parser, "SERVER_HOST", "LAB1_PORT", "DB_PATH")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help=f"your name in the chat (default: {DEFAULT_NAME})")
    add_front_end_options(parser)   # --headless (no window), --wire (show every record and datagram)
    keylog.add_option(parser)    # --keylog FILE: the keys of each session, for the tests' wire story
    return parser.parse_args(argv)


# --- Sockets and state ---------------------------------------------------------------

@dataclass(eq=False)
class Peer(Connection):
    """One TCP connection (its socket, its session, its phase: common/net.py), and:"""
    name: str | None = None            # set once logged in


class ChatServer:
    """Listens, holds at most one chat, and turns everyone else away."""

    def __init__(self, settings: Settings, listener: socket.socket, accounts: AccountStore,
                 name: str, headless: bool) -> None:
        self.settings = settings
        self.listener = listener
        self.accounts = accounts
        self.name = name
        self.partner: Peer | None = None   # the one logged-in client we chat with
        self.peers: set[Peer] = set()      # every open connection, the partner included
        self.selector = selectors.DefaultSelector()
        self.ui = open_front_end(f"Lab 1 server: {name}", self.on_submit, self.on_quit,
                                 headless=headless, poll_interval_ms=settings.poll_interval_ms,
                                 window_lines=settings.window_lines)
        self.acceptor = net.Acceptor(self.selector, listener, self.refusal, self.on_connection,
                                     self.ui.show_note)
        self.password_checks = net.BackgroundWork(self.selector, PASSWORD_WORKERS)
        self.notes = NoteBudget(self.ui.show_note, time.monotonic())   # for all but the partner
        # Each step has its deadline; password checks wait their turn, fairly between
        # addresses, and a connection that closes takes its check with it.
        self.doorway = Doorway(LAB1_LIMITS, self.password_checks.submit, PASSWORD_WORKERS, self.turn_away,
                               time.monotonic)

    def refusal(self, addr: tuple) -> str | None:
        """Say why a new connection is refused, or None to take it. Checked
        before anything is spent on it: no session, no key exchange."""
        return self.doorway.refusal(addr[0], time.monotonic())

    def on_connection(self, sock: socket.socket, addr: tuple) -> None:
        address = net.describe(addr)
        session = SecureSession.server(self.settings.psk, self.settings.server_private_key, address,
                                       recent=self.doorway.handshakes)   # a replayed first record is refused
        peer = Peer(sock, session, address, addr[0])
        self.peers.add(peer)
        for evicted in self.doorway.arrive(peer, peer.source, time.monotonic()):
            self.drop(evicted, "made room for a newer connection")
        self.selector.register(sock, selectors.EVENT_READ, partial(self.on_peer_event, peer))

    def on_peer_event(self, peer: Peer, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self.within_boundary(peer, partial(self.on_readable, peer))
        else:   # writable: more of what was queued can go now
            self.flush(peer)

    def within_boundary(self, peer: Peer, work: Callable[[], None]) -> None:
        """Run ``work`` for ``peer``, then send what it queued.

        Everything one peer can break is caught here, and only that peer is
        dropped: the loop, and the chat under way, carry on. Every callback
        about one peer (its socket events, its finished password check) runs
        through here.
        """
        if peer not in self.peers:   # dropped earlier in this round of events
            return
        try:
            work()
        except ProtocolError as error:
            self.drop(peer, f"dropped: {error}")
            return
        except OSError as error:
            self.drop(peer, f"connection lost: {net.describe_error(error)}")
            return
        self.flush(peer)

    def on_readable(self, peer: Peer) -> None:
        """Handle the bytes that arrived."""
        # BEGIN SOLUTION
        # PROMPT: read the bytes that arrived and hand them to peer.session; an empty read means the peer
        # PROMPT: closed: drop it. When the session's handshake has just completed, move it to Phase.LOGIN,
        # PROMPT: tell self.doorway (handshake_done: drop whom it evicts), and turn it away if we chat already.
        # PROMPT: Then dispatch each message through HANDLERS (none: ProtocolError), and stop once a handler
        # PROMPT: dropped the peer.
        # PROMPT: A BadRecord still carries the genuine messages before it: dispatch those, then raise it.
        data = net.receive(peer.sock)
        if not data:   # an empty read: the peer closed its end
            midway = " in the middle of a record" if peer.session.in_the_middle_of_a_record else ""
            self.drop(peer, f"closed the connection{midway}")
            return
        was_established = peer.session.established
        try:
            messages, failure = peer.session.receive(data), None
        except BadRecord as error:   # a wrong key or a bad record: the genuine records before it still count
            messages, failure = error.delivered, error
        if peer.session.established and not was_established:
            # The handshake is done: it holds the key, and we can tell it
            # things it can trust.
            peer.phase = Phase.LOGIN   # it holds the key: no stranger can take its place now
            for evicted in self.doorway.handshake_done(peer, time.monotonic()):
                self.drop(evicted, "made room for a newer connection")
            if self.partner is not None:
                self.turn_away(peer)
                return
            self.ui.show_note(f"{peer.address} connected")
            self.ui.set_status(f"{peer.address} is logging in")
        for message in messages:
            handler = self.HANDLERS.get(type(message))
            if handler is None:
                raise ProtocolError(f"{type(message).__name__} is not part of the Lab 1 protocol")
            handler(self, peer, message)
            if peer not in self.peers:   # the handler dropped it
                return
        if failure is not None:
            raise failure
        # END SOLUTION

    def handle_login(self, peer: Peer, message: Login | Register) -> None:
        if peer.phase is not Phase.LOGIN:
            raise ProtocolError("a second login on one connection")
        peer.phase = Phase.CHECKING
        check = self.accounts.register if isinstance(message, Register) else self.accounts.login
        if not self.doorway.check_password(peer, peer.source, partial(check, message.name, message.password,
                                           peer.source), partial(self.on_password_checked, peer)):
            self.turn_away(peer)   # that address has its share of the login queue already

    def on_password_checked(self, peer: Peer, result: Future) -> None:
        """Runs in the loop once the worker has checked the password."""
        self.within_boundary(peer, partial(self.finish_login, peer, result))

    def finish_login(self, peer: Peer, result: Future) -> None:
        try:
            name = result.result()
        except ProtocolError as error:   # the reason is written for the user to read
            peer.session.send(LoginRejected(str(error)))
            self.drop(peer, f"login refused: {error}")
            return
        if self.partner is not None:   # another client logged in while we checked
            self.turn_away(peer)
            return
        peer.phase, peer.name, self.partner = Phase.MEMBER, name, peer   # a login takes the slot, never a connection
        peer.session.send(LoginAccepted(peer.name, self.name))
        self.ui.show_note(f"{peer.name} logged in from {peer.address}")
        self.ui.set_status(f"chatting with {peer.name} at {peer.address}, encrypted (Noise NKpsk0)")

    def handle_chat(self, peer: Peer, message: ChatMessage) -> None:
        # BEGIN SOLUTION
        # PROMPT: refuse a chat message before the login (ProtocolError); show its text under the name that
        # PROMPT: logged in, never under the sender the message claims.
        if peer.phase is not Phase.MEMBER:
            raise ProtocolError("a chat message before logging in")
        # The sender is the name that logged in, whatever the message claims.
        self.ui.show_line(peer.name, checked_text(message.text))
        # END SOLUTION

    def handle_goodbye(self, peer: Peer, message: Goodbye) -> None:
        self.drop(peer, f"left the chat ({message.reason})")

    HANDLERS = {
        Login: handle_login,
        Register: handle_login,
        ChatMessage: handle_chat,
        Goodbye: handle_goodbye,
    }

    def turn_away(self, peer: Peer) -> None:
        peer.session.send(Goodbye(BUSY_REASON))
        self.drop(peer, "told that we are busy")

    def flush(self, peer: Peer) -> None:
        """Send what is queued for ``peer``; drop it if its connection broke,
        or if it has stopped reading and MAX_OUTGOING_BYTES wait unsent."""
        if peer not in self.peers:
            return
        try:   # the limit: common/net.py's Connection.flush says why it is there
            peer.flush(self.selector, MAX_OUTGOING_BYTES)
        except OSError as error:   # a broken connection, or a peer that stopped reading (see Connection.flush)
            self.drop(peer, f"connection lost: {net.describe_error(error)}" if error.errno else str(error))

    def drop(self, peer: Peer, why: str) -> None:
        """Close one connection, with what is queued for it as last words (a
        refusal, a Goodbye); if it was our partner, wait for the next client."""
        self.peers.discard(peer)
        self.doorway.leave(peer)
        peer.close(self.selector)
        if peer is self.partner:
            self.ui.show_note(f"{peer.name} {why}")
            self.partner = None
            self.ui.set_status(self.waiting_status())
        else:   # anyone else: a flood of connections must not become a flood of notes
            self.notes.note(f"{peer.name or peer.address} {why}", time.monotonic())

    def on_tick(self) -> None:
        """Every TICK_INTERVAL_MS: drop each connection that is late with its
        handshake or its login, and let the acceptor resume after a pause."""
        self.acceptor.tick()
        now = time.monotonic()
        self.notes.tick(now)
        for peer in self.doorway.late(now):
            self.drop(peer, f"did not complete the handshake within {HANDSHAKE_TIMEOUT_SECONDS} s"
                      if peer.phase is Phase.HANDSHAKE else f"did not log in within {LOGIN_TIMEOUT_SECONDS} s")

    def waiting_status(self) -> str:
        return f"listening on {net.describe(self.listener.getsockname())}: waiting for a client"

    # --- What the user does: the front end calls these ---------------------------------

    def on_submit(self, text: str) -> None:
        """The user entered a line: send it to the partner and show it."""
        # BEGIN SOLUTION
        # PROMPT: send the line to the partner: with nobody logged in, say so; else check the text, show it,
        # PROMPT: queue a ChatMessage on the partner's session, and flush.
        partner = self.partner
        if partner is None:
            self.ui.show_note("nobody to talk to yet: wait for a client to log in")
            return
        text = checked_text(text)   # ProtocolError if it may not be sent: the front end says why
        self.ui.show_line(self.name, text)
        partner.session.send(ChatMessage(self.name, text))
        self.flush(partner)
        # END SOLUTION

    def on_quit(self) -> None:
        """The user quits: tell every connected client why, then close everything."""
        for peer in list(self.peers):
            peer.session.close(SHUTDOWN_REASON)   # a Goodbye, if it can read one
            self.drop(peer, "disconnected: we are shutting down")
        self.ui.set_status("shutting down")

    # --- The loop: one thread, one selector, every socket ----------------------------------

    def turn(self, timeout: float | None) -> None:
        """Wait until sockets are ready (at most ``timeout`` s; a window passes POLL_INTERVAL_MS
        and redraws between turns), then run the handler each carries as ``key.data``."""
        for key, mask in self.selector.select(timeout):
            key.data(mask)
            if self.ui.stopped:   # a quit closed sockets that may still be in this list
                return

    def run(self) -> None:
        address = net.describe(self.listener.getsockname())
        # The tests and the demo read this line to learn the real port.
        self.ui.show_note(f"listening on {address}")
        self.ui.set_status(self.waiting_status())
        self.ui.run(self.selector, self.turn, tick=self.on_tick, tick_interval_ms=TICK_INTERVAL_MS)
        self.password_checks.close()
        self.selector.close()
        self.listener.close()
        self.accounts.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args, for_server=True)
        name = normalise_name(args.name)
        accounts = AccountStore.from_settings(settings)
        listener = net.listening_socket(settings.host, settings.lab1_port)
    except (ConfigError, ProtocolError, OSError) as error:
        print(f"server: {error}", file=sys.stderr)
        return 1
    if warning := slow_hashing_warning():
        print(warning, file=sys.stderr, flush=True)
    ChatServer(settings, listener, accounts, name, args.headless).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
