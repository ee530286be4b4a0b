"""Lab 1 server: a one-to-one encrypted chat over TCP.

The server listens and waits. One client connects, runs the Noise handshake,
logs in (or registers first), and the two of you chat. Whoever connects while
a chat is under way completes the handshake, is told that the server is busy,
and is closed; the chat goes on undisturbed. When the client leaves, the
server waits for the next one.

What this file demonstrates:
- one thread, one ``selectors`` loop, non-blocking sockets, and an outgoing
  buffer sent when the socket is writable (common/net.py);
- a sans-IO session (common/session.py): bytes in, messages out;
- a dispatch table from message class to handler;
- slow password hashing in a worker thread whose result comes back through
  the loop, so the window never freezes;
- one bad peer is dropped, and never stops the server.

Run it (python -m lab1_tcp.server --help explains every option):
    python -m lab1_tcp.server [--host H] [--port P] [--name NAME] [--headless] [--env FILE] [--db FILE]
"""
from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

from common import net
from common.accounts import AccountStore, Argon2Cost, normalise_name
from common.config import ConfigError, Settings, load_settings
from common.errors import ProtocolError
from common.messages import (
    ChatMessage, Goodbye, Login, LoginAccepted, LoginRejected, Register, checked_text,
)
from common.session import SecureSession
from common.ui import open_front_end

# --- Configuration ---------------------------------------------------------------

DEFAULT_NAME = "server"
BUSY_REASON = "the server is busy with another chat; try again later"
SHUTDOWN_REASON = "the server is shutting down"
# Hashing a password takes 30-60 ms on purpose. One worker is enough for Lab 1:
# there is at most one client to log in.
PASSWORD_WORKERS = 1
# A client logs in right after its handshake. One that doesn't (a port scanner,
# a stuck program) would hold the chat slot, or a socket, forever: it is dropped.
LOGIN_TIMEOUT_SECONDS = 30
TICK_INTERVAL_MS = 1000


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab1_tcp.server",
        description="Lab 1 server: one-to-one encrypted chat over TCP. Settings not given "
                    "here come from the environment, then from the env file.")
    parser.add_argument("--host", help="address to listen on (default: SERVER_HOST; "
                                       "0.0.0.0 listens on every interface, for a LAN)")
    parser.add_argument("--port", help="TCP port (default: LAB1_PORT); "
                                       "0 lets the OS pick a free one")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help=f"your name in the chat (default: {DEFAULT_NAME})")
    parser.add_argument("--headless", action="store_true",
                        help="no window: chat through stdin and stdout")
    parser.add_argument("--env", default=".env",
                        help="settings file, created with fresh keys if missing (default: .env)")
    parser.add_argument("--db", help="sqlite3 file of the accounts (default: DB_PATH)")
    return parser.parse_args()


# --- Connections and the protocol ---------------------------------------------------

@dataclass(eq=False)   # eq=False: two peers are equal only if they are the same object
class Peer:
    """One TCP connection and the encrypted session it carries."""
    sock: socket.socket
    address: str
    session: SecureSession
    turned_away: bool                  # it came while another chat was under way
    name: str | None = None            # set once logged in
    checking_password: bool = False
    connected_at: float = field(default_factory=time.monotonic)

    @property
    def who(self) -> str:
        return self.name or self.address


class ChatServer:
    """Listens, holds at most one chat, and turns everyone else away."""

    def __init__(self, settings: Settings, listener: socket.socket, store: AccountStore,
                 name: str, headless: bool) -> None:
        self.settings = settings
        self.listener = listener
        self.store = store
        self.name = name
        self.partner: Peer | None = None   # the one client we chat with
        self.peers: set[Peer] = set()      # every open connection, the partner included
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, self.on_accept)
        self.password_checks = net.BackgroundWork(self.selector, PASSWORD_WORKERS)
        self.ui = open_front_end(f"Lab 1 server: {name}", self.say, self.quit,
                                 headless=headless, poll_interval_ms=settings.poll_interval_ms)

    def on_accept(self, _mask: int) -> None:
        try:
            sock, addr = net.accept(self.listener)
        except OSError as error:  # the caller gave up already, or we are out of file descriptors
            self.ui.show_note(f"a connection attempt failed: {error}")
            return
        peer = Peer(sock, net.describe(addr),
                    SecureSession.server(self.settings.psk, self.settings.server_private_key),
                    turned_away=self.partner is not None)
        self.peers.add(peer)
        self.selector.register(sock, selectors.EVENT_READ, partial(self.on_peer_event, peer))
        if peer.turned_away:
            self.ui.show_note(f"{peer.address} connected while we are busy: turning it away")
        else:
            self.partner = peer
            self.ui.show_note(f"{peer.address} connected")
            self.ui.set_status(f"{peer.address} is logging in")

    def on_peer_event(self, peer: Peer, mask: int) -> None:
        """Read what arrived, act on each whole message, send what is queued.

        Everything one peer can break is caught here, and only that peer is
        dropped: the loop, and the chat under way, carry on.
        """
        if peer not in self.peers:   # dropped earlier in this round of events
            return
        try:
            if mask & selectors.EVENT_READ and not self.on_readable(peer):
                return
            net.send_pending(self.selector, peer.sock, peer.session.outgoing)
        except ProtocolError as error:
            self.drop(peer, f"dropped: {error}")
        except OSError as error:
            self.drop(peer, f"connection lost: {error.strerror or error}")

    def on_readable(self, peer: Peer) -> bool:
        """Handle the bytes that arrived; return False if the peer is gone."""
        data = net.receive(peer.sock)
        if not data:   # an empty read: the peer closed its end
            midway = " in the middle of a record" if peer.session.in_the_middle_of_a_record else ""
            self.drop(peer, f"closed the connection{midway}")
            return False
        messages = peer.session.receive(data)   # ProtocolError for a wrong key or bad record
        if peer.turned_away and peer.session.established:
            # The handshake is done, so we can say why in a message it can trust.
            peer.session.send(Goodbye(BUSY_REASON))
            self.drop(peer, "told that we are busy", last_words=True)
            return False
        for message in messages:
            handler = self.HANDLERS.get(type(message))
            if handler is None:
                raise ProtocolError(f"{type(message).__name__} is not part of the Lab 1 protocol")
            handler(self, peer, message)
            if peer not in self.peers:   # the handler dropped it
                return False
        return True

    def handle_login(self, peer: Peer, message: Login | Register) -> None:
        if peer.name is not None or peer.checking_password:
            raise ProtocolError("a second login on one connection")
        peer.checking_password = True
        check = self.store.register if isinstance(message, Register) else self.store.login
        self.password_checks.submit(partial(check, message.name, message.password),
                                    partial(self.finish_login, peer))

    def finish_login(self, peer: Peer, result: Future) -> None:
        """Runs in the loop once the worker has checked the password."""
        if peer not in self.peers:   # it left while the password was being checked
            return
        peer.checking_password = False
        try:
            peer.name = result.result()
        except ProtocolError as error:   # the reason is written for the user to read
            peer.session.send(LoginRejected(str(error)))
            self.drop(peer, f"login refused: {error}", last_words=True)
            return
        peer.session.send(LoginAccepted(peer.name, self.name))
        self.ui.show_note(f"{peer.name} logged in from {peer.address}")
        self.ui.set_status(f"chatting with {peer.name} at {peer.address}, encrypted (Noise NKpsk0)")
        self.flush(peer)

    def handle_chat(self, peer: Peer, message: ChatMessage) -> None:
        if peer.name is None:
            raise ProtocolError("a chat message before logging in")
        # The sender is the name that logged in, whatever the message claims.
        self.ui.show_line(peer.name, checked_text(message.text))

    def handle_goodbye(self, peer: Peer, message: Goodbye) -> None:
        self.drop(peer, f"left the chat ({message.reason})")

    HANDLERS = {
        Login: handle_login,
        Register: handle_login,
        ChatMessage: handle_chat,
        Goodbye: handle_goodbye,
    }

    def flush(self, peer: Peer) -> None:
        try:
            net.send_pending(self.selector, peer.sock, peer.session.outgoing)
        except OSError as error:
            self.drop(peer, f"connection lost: {error.strerror or error}")

    def drop(self, peer: Peer, why: str, last_words: bool = False) -> None:
        """Close one connection; if it was our partner, wait for the next client."""
        self.peers.discard(peer)
        self.selector.unregister(peer.sock)
        if last_words:
            net.send_last_words_and_close(peer.sock, peer.session.outgoing)
        else:
            peer.sock.close()
        self.ui.show_note(f"{peer.who} {why}")
        if peer is self.partner:
            self.partner = None
            self.ui.set_status(self.waiting_status())

    def drop_silent_connections(self) -> None:
        """The tick: drop every connection not logged in within LOGIN_TIMEOUT_SECONDS."""
        for peer in list(self.peers):
            if (peer.name is None and not peer.checking_password
                    and time.monotonic() - peer.connected_at > LOGIN_TIMEOUT_SECONDS):
                self.drop(peer, f"did not log in within {LOGIN_TIMEOUT_SECONDS} s")

    def waiting_status(self) -> str:
        return f"listening on {net.describe(self.listener.getsockname())}: waiting for a client"

    # --- What the user does: the front end calls these ---------------------------------

    def say(self, text: str) -> None:
        """The user entered a line: send it to the partner and show it."""
        partner = self.partner
        if partner is None or partner.name is None:
            self.ui.show_note("nobody to talk to yet: wait for a client to log in")
            return
        text = checked_text(text)   # ProtocolError if it may not be sent: the front end says why
        self.ui.show_line(self.name, text)
        partner.session.send(ChatMessage(self.name, text))
        self.flush(partner)

    def quit(self) -> None:
        """The user quits: tell every connected client why, then close everything."""
        for peer in list(self.peers):
            if peer.session.established:
                peer.session.send(Goodbye(SHUTDOWN_REASON))
            self.drop(peer, "disconnected: we are shutting down", last_words=True)

    def run(self) -> None:
        address = net.describe(self.listener.getsockname())
        # The tests and the demo read this line to learn the real port.
        self.ui.show_note(f"listening on {address}")
        self.ui.set_status(self.waiting_status())
        self.ui.run(self.selector, tick=self.drop_silent_connections,
                    tick_interval_ms=TICK_INTERVAL_MS)
        self.password_checks.close()
        self.selector.close()
        self.listener.close()
        self.store.close()


# --- main ---------------------------------------------------------------------------

def main() -> int:
    args = parse_arguments()
    try:
        settings = load_settings(args.env, overrides={
            "SERVER_HOST": args.host, "LAB1_PORT": args.port, "DB_PATH": args.db})
        name = normalise_name(args.name)
        cost = Argon2Cost(memory_kib=settings.argon2_memory_kib,
                          iterations=settings.argon2_iterations)
        if settings.server_private_key is None:
            raise ConfigError(f"SERVER_PRIVATE_KEY is not set in {args.env}: the server needs it")
        store = AccountStore(settings.db_path, cost)
        listener = net.listening_socket(settings.host, settings.lab1_port)
    except (ConfigError, ProtocolError, OSError) as error:
        print(f"server: {error}", file=sys.stderr)
        return 1
    ChatServer(settings, listener, store, name, args.headless).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
