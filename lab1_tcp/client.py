"""Lab 1 client: a one-to-one encrypted chat over TCP.

The client connects to the server, runs the Noise handshake (it proves it
knows the pre-shared key; the server proves it holds the private half of the
public key we pinned), logs in (or registers first), and chats until either
side quits.

What this file demonstrates:
- a non-blocking connect: the window stays alive while TCP's own handshake
  runs; every address a host name stands for is tried in turn (net.Connector),
  and a refused connection is reported, not hung on;
- one ``selectors`` loop, polled from Tk with ``after()`` (common/ui.py);
- a sans-IO session (common/session.py) and a dispatch table;
- telling the user exactly what went wrong: no server, a wrong key, a
  refused login, a busy server.

Run it (python -m lab1_tcp.client --help explains every option):
    python -m lab1_tcp.client [--host H] [--port P] --name NAME [--register] [--headless] [--env FILE]
The password comes from the CHAT_PASSWORD environment variable if it is set,
else from a prompt; never from the command line, where other users of the
machine could read it in the process list.
"""
from __future__ import annotations

import argparse
import enum
import os
import selectors
import socket
import sys

from common import keylog, net
from common.config import ConfigError, Settings, add_setting_options, settings_from
from common.errors import ProtocolError
from common.messages import (
    ChatMessage, ErrorNotice, Goodbye, Login, LoginAccepted, LoginRejected, Register, checked_text,
)
from common.session import BadRecord, SecureSession
from common.ui import add_front_end_options, open_front_end

# --- Settings ------------------------------------------------------------------------

PASSWORD_VARIABLE = "CHAT_PASSWORD"
QUIT_REASON = "quit"
EXIT_OK, EXIT_FAILED = 0, 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab1_tcp.client",
        description="Lab 1 client: one-to-one encrypted chat over TCP. Settings not given "
                    f"here come from the environment, then from the env file. The password "
                    f"comes from ${PASSWORD_VARIABLE}, else from a prompt.")
    add_setting_options(parser, "SERVER_HOST", "LAB1_PORT")
    parser.add_argument("--name", required=True, help="your account name (3-20 of a-z, 0-9, _)")
    parser.add_argument("--register", action="store_true",
                        help="create the account first, then log in with it")
    add_front_end_options(parser)   # --headless (no window), --wire (show every record and datagram)
    keylog.add_option(parser)    # --keylog FILE: the keys of each session, for the tests' wire story
    return parser.parse_args(argv)


# --- Sockets and state ---------------------------------------------------------------

class Phase(enum.Enum):
    """Where our connection is in its life."""
    CONNECTING = "connecting"   # TCP's own handshake, one address after another
    HANDSHAKE = "handshake"     # Noise: proving we hold the key, and the server its own
    LOGIN = "login"             # encrypted; our Login or Register is on its way
    CHATTING = "chatting"       # logged in
    CLOSED = "closed"           # over: the window stays open to be read


class ChatClient:
    """One connection to the server: connect, handshake, log in, chat."""

    def __init__(self, settings: Settings, name: str, register: bool, headless: bool) -> None:
        self.host, self.port = settings.host, settings.lab1_port
        self.address = net.describe((self.host, self.port))
        self.name = name                  # replaced by the server's spelling at login
        self.register = register
        self.password = ""
        self.session = SecureSession.client(settings.psk, settings.server_public_key)
        self.selector = selectors.DefaultSelector()
        self.connector: net.Connector | None = None   # while TCP connects
        self.sock: socket.socket | None = None        # once it has
        self.phase = Phase.CONNECTING
        self.exit_code = EXIT_OK
        self.ui = open_front_end(f"Lab 1 client: {name}", self.on_submit, self.on_quit,
                                 headless=headless, poll_interval_ms=settings.poll_interval_ms,
                                 window_lines=settings.window_lines)
        # Lines typed (or piped in) before the login is accepted wait until it is.
        self.ui.set_input_enabled(False)

    def connect(self) -> None:
        """Start connecting; the loop calls on_connected (or on_connect_failed)."""
        # BEGIN SOLUTION
        # PROMPT: start a non-blocking connect with net.Connector: it calls on_connected or on_connect_failed
        # PROMPT: from the loop. A host name that does not resolve is an OSError: fail, saying so.
        self.ui.set_status(f"connecting to {self.address}")
        try:
            self.connector = net.Connector(self.selector, self.host, self.port,
                                           self.on_connected, self.on_connect_failed)
        except OSError as error:   # the name does not resolve, or no address could be tried
            self.fail(f"cannot reach the server at {self.address}: {net.describe_error(error)}")
        # END SOLUTION

    def on_connected(self, sock: socket.socket) -> None:
        # BEGIN SOLUTION
        # PROMPT: keep the socket and move to Phase.HANDSHAKE; register it for reading, and send the first
        # PROMPT: handshake record, already waiting in session.outgoing.
        self.connector, self.sock, self.phase = None, sock, Phase.HANDSHAKE
        self.ui.set_status(f"connected to {self.address}: handshake")
        # The first handshake record is already in session.outgoing: it goes
        # out now, and the server's answer wakes on_event.
        self.selector.register(sock, selectors.EVENT_READ, self.on_event)
        self.on_event(selectors.EVENT_WRITE)
        # END SOLUTION

    def on_connect_failed(self, reason: str) -> None:
        self.connector = None
        self.fail(f"cannot reach the server at {self.address}: {reason}")

    def on_event(self, mask: int) -> None:
        try:
            if mask & selectors.EVENT_READ and not self.on_readable():
                return
            net.send_pending(self.selector, self.sock, self.session.outgoing)
        except ProtocolError as error:
            self.fail(f"the server broke the protocol: {error}")
        except OSError as error:
            self.fail(f"lost the connection to the server: {net.describe_error(error)}")

    def on_readable(self) -> bool:
        """Handle the bytes that arrived; return False if the session is over."""
        # BEGIN SOLUTION
        # PROMPT: read the bytes that arrived; an empty read means the server closed: fail, saying why. Hand
        # PROMPT: them to the session and dispatch each message through HANDLERS (none: ProtocolError); stop
        # PROMPT: if a handler closed the session. Once the handshake completes, send Login or Register.
        # PROMPT: A BadRecord still carries the genuine messages before it: dispatch those, then raise it.
        data = net.receive(self.sock)
        if not data:   # an empty read: the server closed its end
            self.fail(self.session.why_the_server_closed(logged_in=self.phase is Phase.CHATTING))
            return False
        was_established = self.session.established
        try:
            messages, failure = self.session.receive(data), None
        except BadRecord as error:   # the genuine records before the bad one still count
            messages, failure = error.delivered, error
        for message in messages:
            handler = self.HANDLERS.get(type(message))
            if handler is None:
                raise ProtocolError(f"{type(message).__name__} is not part of the Lab 1 protocol")
            handler(self, message)
            if self.phase is Phase.CLOSED:   # the handler ended the session
                return False
        if failure is not None:
            raise failure
        if self.session.established and not was_established:
            # The handshake is done: from here on everything is encrypted, the
            # password included.
            self.ui.set_status(f"connected to {self.address}, encrypted: logging in")
            self.phase = Phase.LOGIN
            request = Register if self.register else Login
            self.session.send(request(self.name, self.password))
        return True
        # END SOLUTION

    def handle_login_accepted(self, message: LoginAccepted) -> None:
        self.name, self.phase = message.name, Phase.CHATTING
        self.ui.show_note(f"logged in as {self.name}")
        self.ui.set_input_enabled(True)
        self.ui.set_status(f"chatting with {message.server_name} at {self.address}, "
                           "encrypted (Noise NKpsk0)")

    def handle_login_rejected(self, message: LoginRejected) -> None:
        self.fail(message.reason)

    def handle_chat(self, message: ChatMessage) -> None:
        if self.phase is not Phase.CHATTING:
            raise ProtocolError("a chat message before the login was accepted")
        self.ui.show_line(message.sender, checked_text(message.text))

    def handle_goodbye(self, message: Goodbye) -> None:
        if self.phase is Phase.CHATTING:   # the chat happened, and the server ended it: a clean end
            self.fail(f"the server ended the chat: {message.reason}", EXIT_OK)
        else:   # turned away before we could chat (the server is busy)
            self.fail(message.reason)

    def handle_error_notice(self, message: ErrorNotice) -> None:
        self.ui.show_note(f"server: {message.text}")

    HANDLERS = {
        LoginAccepted: handle_login_accepted,
        LoginRejected: handle_login_rejected,
        ChatMessage: handle_chat,
        Goodbye: handle_goodbye,
        ErrorNotice: handle_error_notice,
    }

    def fail(self, why: str, exit_code: int = EXIT_FAILED) -> None:
        """The session is over: close the socket and show why."""
        if self.connector is not None:
            self.connector.cancel()
            self.connector = None
        if self.sock is not None:
            self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self.phase, self.exit_code = Phase.CLOSED, exit_code
        self.ui.session_over(why)

    # --- What the user does: the front end calls these ---------------------------------

    def on_submit(self, text: str) -> None:
        """The user entered a line: send it to the server and show it.
        ProtocolError if it may not be sent: the front end says why."""
        # BEGIN SOLUTION
        # PROMPT: send the line: check it, queue a ChatMessage on the session, show it, and flush; a broken
        # PROMPT: connection ends the session.
        text = checked_text(text)
        self.session.send(ChatMessage(self.name, text))
        self.ui.show_line(self.name, text)
        try:
            net.send_pending(self.selector, self.sock, self.session.outgoing)
        except OSError as error:
            self.fail(f"lost the connection to the server: {net.describe_error(error)}")
        # END SOLUTION

    def on_quit(self) -> None:
        """The user quits: say goodbye if we are in a session, then close."""
        if self.connector is not None:   # still connecting: nobody to tell
            self.connector.cancel()
            self.connector = None
        if self.sock is None:
            return
        self.selector.unregister(self.sock)
        self.session.close(QUIT_REASON)   # a Goodbye, once the handshake is done
        net.send_last_words_and_close(self.sock, self.session.outgoing)
        # CLOSED, as fail() leaves it: a handler still running (on_readable's
        # loop) then knows there is no socket left to send on.
        self.sock, self.phase = None, Phase.CLOSED

    # --- The loop: one thread, one selector, every socket ----------------------------------

    def turn(self, timeout: float | None) -> None:
        """Wait until sockets are ready (at most ``timeout`` s; a window passes POLL_INTERVAL_MS
        and redraws between turns), then run the handler each carries as ``key.data``."""
        for key, mask in self.selector.select(timeout):
            key.data(mask)
            if self.ui.stopped:   # a quit closed sockets that may still be in this list
                return

    def run(self) -> int:
        """Ask for the password, connect, chat; return the exit code."""
        self.password = os.environ.get(PASSWORD_VARIABLE) or self.ui.ask_password(
            f"Password for {self.name}")
        if not self.password:
            self.ui.session_over("no password given")
            return EXIT_FAILED
        self.connect()
        # Poll only once a socket is registered: on Windows, select() with
        # nothing to watch raises an error.
        if self.connector is not None:
            self.ui.run(self.selector, self.turn)
        self.selector.close()
        return self.exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        # create=False: a client must use the server's keys, never make its own.
        settings = settings_from(args, create=False)
    except ConfigError as error:
        print(f"client: {error}", file=sys.stderr)
        return EXIT_FAILED
    return ChatClient(settings, args.name, args.register, args.headless).run()


if __name__ == "__main__":
    sys.exit(main())
