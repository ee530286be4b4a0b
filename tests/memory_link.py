"""A whole chat system wired in memory: sessions, room, datagrams, transcripts.

No sockets: a client's bytes are handed to the server's session and back,
and a room event travels as a real sealed, signed datagram that each client
opens. It is the network of the labs with the wires taken out.
"""
from __future__ import annotations

import os
from concurrent.futures import Future

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import noise
from common.accounts import AccountStore, Argon2Cost
from common.errors import ProtocolError
from common.framing import DatagramOpener, DatagramSealer
from common.messages import (
    ErrorNotice,
    EventKind,
    History,
    HistoryStart,
    IgnoreList,
    Login,
    LoginAccepted,
    PrivateMessage,
    Register,
    RoomKey,
    encode,
)
from common.room import Broadcast, Delivery, NewRoomKey, Room, StoreWrite
from common.session import SecureSession
from common.transcript import (
    Roster, Transcript, format_event, format_hidden_run, read_room_datagram, start_history,
)

CHEAP_ARGON2 = Argon2Cost(memory_kib=64, iterations=1, lanes=1)


class MemoryServer:
    """The server's side: one SecureSession per connection, and the shipped
    Room, whose instructions it carries out as lab2_udp/server.py does."""

    def __init__(self, **room_options) -> None:
        """``room_options`` go to the Room (a small window of the log: history_events=...)."""
        self.private_key, self.public_key = noise.generate_keypair()
        self.psk = os.urandom(32)
        self.accounts = AccountStore(":memory:", CHEAP_ARGON2)
        signing_key = Ed25519PrivateKey.generate()
        self.room = Room("server", self.accounts, signing_key.public_key().public_bytes_raw(), **room_options)
        self.sealer = DatagramSealer(signing_key)
        self.sealer.set_room_key(self.room.epoch, self.room.room_key)
        self.sessions: dict[int, SecureSession] = {}
        self.clients: dict[int, MemoryClient] = {}

    def connect(self, client: MemoryClient) -> None:
        conn = len(self.sessions) + 1
        self.sessions[conn], self.clients[conn] = SecureSession.server(self.psk, self.private_key), client
        client.conn = conn

    def receive(self, conn: int, data: bytes) -> None:
        session = self.sessions[conn]
        for message in session.receive(data):
            if isinstance(message, (Login, Register)):
                act = self.accounts.register if isinstance(message, Register) else self.accounts.login
                self.carry_out(self.room.join(conn, act(message.name, message.password)))
            else:
                self.carry_out(self.room.handle(conn, message))
        self.carry_out(self.room.tick(force=True))   # no batching window in memory
        self._flush(conn)

    def leave(self, conn: int) -> None:
        """``conn`` closed its connection."""
        del self.clients[conn]
        self.room.leave(conn)
        self.carry_out(self.room.tick(force=True))

    def carry_out(self, instructions) -> None:
        for instruction in instructions:
            if isinstance(instruction, Delivery):
                self.sessions[instruction.to].send(instruction.message)
                self._flush(instruction.to)
            elif isinstance(instruction, StoreWrite):   # written at once: no other program locks memory
                outcome = Future()
                try:
                    outcome.set_result(instruction.write())
                except ProtocolError as error:
                    outcome.set_exception(error)
                self.carry_out(self.room.written(instruction.to, outcome))
            elif isinstance(instruction, Broadcast):
                datagram = self.sealer.seal(encode(instruction.batch))
                for client in list(self.clients.values()):
                    client.receive_datagram(datagram)
            elif isinstance(instruction, NewRoomKey):
                self.sealer.set_room_key(instruction.epoch, instruction.key)

    def _flush(self, conn: int) -> None:
        session = self.sessions[conn]
        if session.outgoing and conn in self.clients:
            data = bytes(session.outgoing)
            session.outgoing.clear()
            self.clients[conn].receive(data)


class MemoryClient:
    """A member: a session to the server, a datagram opener and a transcript."""

    def __init__(self, server: MemoryServer) -> None:
        self.server = server
        self.session = SecureSession.client(server.psk, server.public_key)
        self.opener: DatagramOpener | None = None
        self.transcript = Transcript()
        self.screen: list[str] = []          # what a terminal client would print
        self.name: str | None = None
        self.ignored: tuple[str, ...] = ()
        server.connect(self)
        self._flush()

    def send(self, message) -> None:
        self.session.send(message)
        self._flush()

    def receive(self, data: bytes) -> None:
        for message in self.session.receive(data):
            if isinstance(message, LoginAccepted):
                self.name = message.name
                self.roster = Roster(message.server_name)
            elif isinstance(message, RoomKey):
                self.opener = self.opener or DatagramOpener(message.signing_key)
                self.opener.add_room_key(message.epoch, message.key)
            elif isinstance(message, IgnoreList):
                self.ignored = message.names
            elif isinstance(message, HistoryStart):
                self.roster = start_history(self, self.transcript, self.roster, message)
            elif isinstance(message, History):
                self._show(self.transcript.receive(message.events, message.latest_seq))
            elif isinstance(message, PrivateMessage):
                self.screen.append(f"[DM {message.sender} -> {message.recipient}] {message.text}")
            elif isinstance(message, ErrorNotice):
                self.screen.append(f"! {message.text}")

    def receive_datagram(self, datagram: bytes) -> None:
        if self.opener is not None:
            batch = read_room_datagram(self.opener, datagram)
            self._show(self.transcript.receive(batch.events, batch.latest_seq))

    def show_text(self, line: str, sender: str) -> None:   # the front end start_history shows on
        self.screen.append(line)

    def set_members(self, names: list[str]) -> None:
        self.members = names

    def _show(self, events) -> None:
        for event in events:   # as lab2_udp/client.py shows them
            hidden = event.kind is EventKind.SAY and self.roster.account_of(event.sender) in self.ignored
            self.screen.append(format_hidden_run(event.seq, event.seq) if hidden else format_event(event))
            self.roster.apply(event)

    def _flush(self) -> None:
        data = bytes(self.session.outgoing)
        self.session.outgoing.clear()
        if data:
            self.server.receive(self.conn, data)
