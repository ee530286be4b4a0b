"""Lab 2 client: join the room, hear it by UDP broadcast, talk over TCP.

Run it:  CHAT_PASSWORD=... python -m lab2_udp.client --name alice [--register] [--headless]

What this file demonstrates:
- Two sockets in one ``selectors`` loop. A TCP session to the server carries
  what *we* say and the repairs we ask for. A UDP socket bound to the
  broadcast port (with port reuse, so many clients on one machine can bind
  it) hears the room, as every other client does, from the same datagrams.
- UDP may lose, duplicate or reorder datagrams. The server numbers every
  event; common/transcript.py delivers them in order, drops duplicates and
  notices gaps, and we ask for what is missing over TCP. So every screen
  shows the same lines, in the same order, and the same transcript hash.
- We never print our own message when we send it: it appears when its
  numbered event comes back, in its place in the room's order.

Typed lines: text is a room message; /msg NAME text, /ignore NAME,
/unignore NAME, /who, /nick NEWNAME, /hash (the transcript's fingerprint),
/quit (or Ctrl-X).
"""
from __future__ import annotations

import argparse
import enum
import os
import selectors
import sys
import time

from common import keylog, net
from common.config import ConfigError, Settings, add_setting_options, settings_from
from common.errors import ProtocolError
from common.framing import DatagramOpener, KeyNotYetHere
from common.messages import (
    ChangeName, ErrorNotice, Goodbye, History, HistoryStart, IgnoreList, IgnoreUser, Login,
    LoginAccepted, LoginRejected, MemberList, PrivateMessage, Register, RepairRequest, RoomGroup, RoomKey, Say,
    UnignoreUser, WhoRequest, checked_text, typed_text,
)
from common.session import BadRecord, SecureSession
from common.transcript import (DatagramGate, EarlyDatagrams, Roster, Transcript, format_private, read_room_datagram,
                               show_events, start_history)
from common.ui import ChatWindow, TerminalChat, add_front_end_options, open_front_end

# --- Settings ------------------------------------------------------------------------

TICK_INTERVAL_MS = 50      # how often we check for gaps worth a repair request
MAX_DATAGRAMS_PER_TURN = 4096   # a full buffer's worth is read, then the loop turns: TCP is never starved
DEAF_WARNING = ("no room datagram has arrived for 1.5 s: broadcast may be blocked on UDP port {port} (Wi-Fi client "
                "isolation; {firewall}) or BROADCAST_ADDR is wrong; following the room over TCP instead, more slowly")
COMMANDS = ("/msg", "/ignore", "/unignore", "/who", "/nick", "/hash", "/quit")
EXIT_OK, EXIT_FAILED = 0, 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab2_udp.client", description=__doc__.split("\n")[0],
                                     epilog="The password comes from CHAT_PASSWORD, or a prompt.")
    add_setting_options(parser, "SERVER_HOST", "LAB2_PORT", "BROADCAST_PORT", "MULTICAST_GROUP")
    parser.add_argument("--name", required=True, help="your name in the room")
    parser.add_argument("--register", action="store_true", help="create the account first")
    add_front_end_options(parser)   # --headless (no window), --wire (show every record and datagram)
    keylog.add_option(parser)    # --keylog FILE: the keys of each session, for the tests' wire story
    return parser.parse_args(argv)


# --- Sockets and state ---------------------------------------------------------------

class Phase(enum.Enum):
    """Where our session with the server is in its life."""
    CONNECTING = "connecting"   # TCP's own handshake, one address after another
    HANDSHAKE = "handshake"     # Noise: proving we hold the key, and the server its own
    LOGIN = "login"             # encrypted; our Login or Register is on its way
    MEMBER = "member"           # in the room
    CLOSED = "closed"           # over: the window stays open to be read


class RoomClient:
    """Our TCP session, our broadcast socket, and what the screen shows."""

    def __init__(self, args: argparse.Namespace, settings: Settings, password: str,
                 ui: ChatWindow | TerminalChat) -> None:
        self.ui = ui
        self.exit_code = EXIT_OK
        self.selector = selectors.DefaultSelector()
        self.session = SecureSession.client(settings.psk, settings.server_public_key)
        login_type = Register if args.register else Login
        self.login = login_type(args.name, password)
        # Bind the broadcast port first: a port clash is reported before we log in.
        group, port = settings.multicast_group, settings.broadcast_port
        self.udp = net.multicast_receiver(group, port, settings.host) if group else net.broadcast_receiver(port)
        self.group = group   # the server may name one at login (RoomGroup)
        self.selector.register(self.udp, selectors.EVENT_READ, self.on_datagrams)
        self.server = (settings.host, settings.lab2_port)
        self.phase, self.sock = Phase.CONNECTING, None   # net.Connector tries each address the name has
        self.connector = net.Connector(self.selector, *self.server, self.on_connected, lambda reason: self.fail(
            f"cannot reach the server at {net.describe(self.server)}: {reason}"))
        self.opener: DatagramOpener | None = None   # until the server hands us the room key
        self.gate = DatagramGate(net.is_own_address)   # over loopback: any address of this host is the server's
        self.early = EarlyDatagrams()   # datagrams that overtook their room key
        self.broadcast_port = settings.broadcast_port
        self.warned_deaf = False
        self.transcript = Transcript()
        self.account = None                # from LoginAccepted; our shown name may change (/nick)
        self.roster = Roster("")           # who is in the room, from the room's own events
        self.ignored: frozenset[str] = frozenset()   # accounts, not shown names

    # --- TCP: the session with the server -------------------------------------------------

    def on_connected(self, sock) -> None:
        self.phase, self.sock, self.connector = Phase.HANDSHAKE, sock, None
        self.gate.server_host = sock.getpeername()[0]   # room datagrams come from this host only
        self.ui.set_status(f"connected to {net.describe(self.server)}, handshake...")
        self.selector.register(self.sock, selectors.EVENT_READ, self.on_readable)
        self.flush()

    def on_readable(self, _mask: int) -> None:
        try:
            # BEGIN SOLUTION
            # PROMPT: read and dispatch as Lab 1's client does: an empty read means the server closed (fail,
            # PROMPT: saying why); each message (of a BadRecord: its delivered ones, then raise it) through HANDLERS
            # PROMPT: (none: ProtocolError); once the handshake completes, Phase.LOGIN and send self.login; flush.
            data = net.receive(self.sock)
            if not data:   # an empty recv() means the server closed the connection
                return self.fail(self.session.why_the_server_closed(logged_in=self.phase is Phase.MEMBER))
            was_established = self.session.established
            try:
                messages, failure = self.session.receive(data), None
            except BadRecord as error:   # the genuine records before the bad one still count
                messages, failure = error.delivered, error
            for message in messages:
                handler = self.HANDLERS.get(type(message))
                if handler is None:
                    raise ProtocolError(f"a server does not send {type(message).__name__}")
                handler(self, message)
                if self.phase is Phase.CLOSED:   # a Goodbye or a refusal ended the session
                    return
            if failure is not None:
                raise failure
            if self.session.established and not was_established:
                self.phase = Phase.LOGIN
                self.session.send(self.login)   # the session is encrypted: now the password may go
            self.flush()
            # END SOLUTION
        except (ProtocolError, OSError) as error:
            self.fail(f"connection lost: {net.describe_error(error)}")

    def send(self, message) -> None:
        if self.phase is not Phase.MEMBER:   # the session is over; the window stays open to be read
            return
        self.session.send(message)
        self.flush()

    def flush(self) -> None:
        net.send_pending(self.selector, self.sock, self.session.outgoing)

    @property
    def name(self) -> str:
        """The name the room shows us under now."""
        return self.roster.name_of(self.account)

    def handle_login_accepted(self, message: LoginAccepted) -> None:
        self.phase, self.account, self.roster = Phase.MEMBER, message.name, Roster(message.server_name)
        self.ui.show_note(f"logged in as {self.name}")
        self.show_room_state()
        self.ui.set_input_enabled(True)

    def handle_login_rejected(self, message: LoginRejected) -> None:
        self.fail(message.reason)

    def handle_room_key(self, message: RoomKey) -> None:
        # The signing key is the same all run long; the room key changes whenever a
        # member leaves. We keep the previous one for datagrams still on their way.
        if self.opener is None:
            self.opener = DatagramOpener(message.signing_key)
            self.transcript.heard(time.monotonic())   # from now on, silence means deafness
        self.opener.add_room_key(message.epoch, message.key)
        for datagram, source in self.early.release(time.monotonic()):   # they came before this key
            self.open_datagram(datagram, source, time.monotonic())

    def handle_room_group(self, message: RoomGroup) -> None:
        # A multicast room (a Mac's loopback cannot broadcast): join it where the server is.
        if message.group != self.group:
            net.join_group(self.udp, message.group, self.gate.server_host)
            self.group = message.group

    def handle_ignore_list(self, message: IgnoreList) -> None:
        if self.ignored or message.names:
            self.ui.show_note("you ignore: " + (", ".join(message.names) or "nobody"))
        self.ignored = frozenset(message.names)

    def handle_history(self, message: History) -> None:
        self.show(self.transcript.receive(message.events, message.latest_seq))

    def handle_history_start(self, message: HistoryStart) -> None:   # the server no longer keeps the oldest
        self.roster = start_history(self.ui, self.transcript, self.roster, message)

    def handle_private_message(self, message: PrivateMessage) -> None:
        self.ui.show_text(format_private(message), message.sender)

    def handle_member_list(self, message: MemberList) -> None:
        self.ui.show_note("in the room: " + ", ".join(message.names))

    def handle_error_notice(self, message: ErrorNotice) -> None:
        self.ui.show_note(f"! {message.text}")

    def handle_goodbye(self, message: Goodbye) -> None:
        # Not a failure: the server ended the session and told us why.
        self.close()
        self.ui.session_over(f"the server said goodbye: {message.reason}")

    HANDLERS = {
        LoginAccepted: handle_login_accepted, LoginRejected: handle_login_rejected, RoomKey: handle_room_key,
        RoomGroup: handle_room_group, IgnoreList: handle_ignore_list, History: handle_history, Goodbye: handle_goodbye,
        HistoryStart: handle_history_start,
        PrivateMessage: handle_private_message, MemberList: handle_member_list, ErrorNotice: handle_error_notice,
    }

    # --- UDP: the room, heard by broadcast ------------------------------------------------

    def on_datagrams(self, _mask: int) -> None:
        # Read what waits first (cheap: a flood must not fill the kernel's buffer while we open), then open.
        # BEGIN SOLUTION
        # PROMPT: read the datagrams waiting (net.read_datagrams, at most MAX_DATAGRAMS_PER_TURN). Before the
        # PROMPT: room key, skip them all; else open (open_datagram) those self.gate.choose says are worth it.
        received = net.read_datagrams(self.udp, MAX_DATAGRAMS_PER_TURN)
        if self.opener is None:
            return   # not logged in yet: nothing to open them with
        now = time.monotonic()
        for datagram, source in self.gate.choose(received, now):   # the server's own first
            self.open_datagram(datagram, source, now)
        # END SOLUTION

    def open_datagram(self, datagram: bytes, source: tuple, now: float) -> None:
        # BEGIN SOLUTION
        # PROMPT: open it with read_room_datagram (KeyNotYetHere: self.early holds it; ProtocolError: tell the
        # PROMPT: gate, drop it silently), and show what the transcript delivers, in order.
        try:
            batch = read_room_datagram(self.opener, datagram)
        except KeyNotYetHere:   # UDP overtook the new key, which comes over TCP: held until it is in
            return self.early.hold(datagram, source, now)
        except ProtocolError:   # forged, replayed, damaged or someone else's: drop it silently
            return self.gate.rejected(source, now)
        self.gate.opened(source)
        self.transcript.heard(now)
        self.show(self.transcript.receive(batch.events, batch.latest_seq))
        # END SOLUTION

    def show(self, events) -> None:
        if show_events(self.ui, self.roster, events, self.ignored):
            self.show_room_state()   # once per batch, not once per event

    def show_room_state(self) -> None:
        self.ui.set_status(f"{self.name} in {self.roster.server_name}'s room at {net.describe(self.server)}, encrypted")
        self.ui.set_members(self.roster.names())

    def tick(self) -> None:
        """Ask the server for what a gap says we missed (a few times a second at most)."""
        now = time.monotonic()
        if self.phase is not Phase.MEMBER:
            return
        if self.transcript.is_deaf(now) and not self.warned_deaf:
            self.warned_deaf = True
            self.ui.show_note("! " + DEAF_WARNING.format(port=self.broadcast_port, firewall=net.firewall_causes()))
        # BEGIN SOLUTION
        # PROMPT: ask the server over TCP (a RepairRequest) for what the transcript says is missing.
        after_seq = self.transcript.repair_due(now)
        if after_seq is not None:
            self.send(RepairRequest(after_seq))
        # END SOLUTION

    # --- What the user does: the front end calls these ---------------------------------

    def on_submit(self, text: str) -> None:
        command, _, rest = text.strip().partition(" ")
        try:
            if command == "/msg":
                recipient, _, private_text = rest.strip().partition(" ")
                self.send(PrivateMessage(self.name, recipient, checked_text(private_text)))
            elif command == "/ignore":
                self.send(IgnoreUser(rest.strip()))
            elif command == "/unignore":
                self.send(UnignoreUser(rest.strip()))
            elif command == "/who":
                self.send(WhoRequest())
            elif command == "/nick":
                self.send(ChangeName(rest.strip()))
            elif command == "/hash":
                self.ui.show_note(self.transcript.summary())
            else:
                self.send(Say(typed_text(text, COMMANDS)))
        except OSError as error:
            self.fail(f"connection lost: {net.describe_error(error)}")

    def on_quit(self) -> None:
        self.session.close("quit")   # a Goodbye, once the handshake is done
        self.close()

    def fail(self, reason: str) -> None:
        self.exit_code = EXIT_FAILED
        self.close()
        self.ui.session_over(reason)

    def close(self) -> None:
        if self.connector is not None:   # still connecting: stop trying
            self.connector.cancel()
        elif self.phase is not Phase.CLOSED:
            self.selector.unregister(self.sock)
            net.send_last_words_and_close(self.sock, self.session.outgoing)
        self.phase, self.connector = Phase.CLOSED, None

    # --- The loop: one thread, one selector, every socket ----------------------------------

    def turn(self, timeout: float | None) -> None:
        """Wait until sockets are ready (at most ``timeout`` s; a window passes POLL_INTERVAL_MS
        and redraws between turns), then run the handler each carries as ``key.data``."""
        for key, mask in self.selector.select(timeout):
            key.data(mask)
            if self.ui.stopped:   # a quit closed sockets that may still be in this list
                return


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args, create=False)   # a client uses the server's keys, never its own
    except ConfigError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return EXIT_FAILED
    client = None
    ui = open_front_end(f"Lab 2 room: {args.name}", lambda text: client.on_submit(text),
                        lambda: client.on_quit(), headless=args.headless,
                        poll_interval_ms=settings.poll_interval_ms, window_lines=settings.window_lines)
    password = os.environ.get("CHAT_PASSWORD") or ui.ask_password(f"Password for {args.name}")
    if not password:
        print("no password given", file=sys.stderr)
        return EXIT_FAILED
    try:
        client = RoomClient(args, settings, password, ui)
    except OSError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return EXIT_FAILED
    ui.set_input_enabled(False)   # until the login is accepted: typed lines wait, none is lost
    ui.run(client.selector, client.turn, tick=client.tick, tick_interval_ms=TICK_INTERVAL_MS)
    if client.exit_code == EXIT_OK:   # on a failure, its reason stays the last line
        print(client.gate.summary(), file=sys.stderr)
        print(client.transcript.summary(), file=sys.stderr, flush=True)
    return client.exit_code


if __name__ == "__main__":
    sys.exit(main())
