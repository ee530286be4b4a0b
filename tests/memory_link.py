"""A whole chat system wired in memory: sessions, room, datagrams, transcripts.

No sockets: a client's bytes are handed to the server's session and back,
and a room event travels as a real sealed, signed datagram that each client
opens. It is the network of the labs with the wires taken out.
"""
from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import noise
from common.accounts import AccountStore, Argon2Cost
from common.framing import DatagramOpener, DatagramSealer
from common.messages import (
    ErrorNotice, History, IgnoreList, Login, LoginAccepted, PrivateMessage,
    Register, RoomBatch, RoomKey, encode,
)
from common.room import ROOM, Room
from common.session import SecureSession
from common.transcript import Transcript, read_room_datagram

CHEAP_ARGON2 = Argon2Cost(memory_kib=64, iterations=1, lanes=1)


class MemoryServer:
    """The server's side: one SecureSession per connection, one Room."""

    def __init__(self) -> None:
        self.private_key, self.public_key = noise.generate_keypair()
        self.psk = os.urandom(32)
        self.accounts = AccountStore(":memory:", CHEAP_ARGON2)
        self.room = Room("server", self.accounts)
        self.sessions: dict[int, SecureSession] = {}
        self.clients: dict[int, MemoryClient] = {}
        signing_key = Ed25519PrivateKey.generate()
        self.signing_public_key = signing_key.public_key().public_bytes_raw()
        self.sealer = DatagramSealer(signing_key)
        self.room_key = os.urandom(32)
        self.sealer.set_room_key(1, self.room_key)

    def connect(self, client: MemoryClient) -> None:
        conn = len(self.sessions) + 1
        self.sessions[conn], self.clients[conn] = SecureSession.server(self.psk, self.private_key), client
        client.conn = conn

    def receive(self, conn: int, data: bytes) -> None:
        session = self.sessions[conn]
        for message in session.receive(data):
            if isinstance(message, (Login, Register)):
                self._log_in(conn, message)
            else:
                self._deliver(self.room.handle(conn, message))
        self._flush(conn)

    def _log_in(self, conn: int, message: Login | Register) -> None:
        act = self.accounts.register if isinstance(message, Register) else self.accounts.login
        name = act(message.name, message.password)
        self.sessions[conn].send(RoomKey(1, self.room_key, self.signing_public_key))
        self._deliver(self.room.join(conn, name))

    def _deliver(self, deliveries) -> None:
        for delivery in deliveries:
            if delivery.to is ROOM:
                datagram = self.sealer.seal(encode(RoomBatch((delivery.message,), self.room.latest_seq)))
                for client in self.clients.values():
                    client.receive_datagram(datagram)
            else:
                self.sessions[delivery.to].send(delivery.message)
                self._flush(delivery.to)

    def _flush(self, conn: int) -> None:
        session = self.sessions[conn]
        if session.outgoing:
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
            elif isinstance(message, RoomKey):
                self.opener = DatagramOpener(message.signing_key)
                self.opener.add_room_key(message.epoch, message.key)
            elif isinstance(message, IgnoreList):
                self.ignored = message.names
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

    def _show(self, events) -> None:
        for event in events:
            hidden = event.kind == "say" and event.sender in self.ignored
            self.screen.append(f"#{event.seq} (hidden)" if hidden else f"#{event.seq} {event.kind} {event.sender}: {event.text}")

    def _flush(self) -> None:
        data = bytes(self.session.outgoing)
        self.session.outgoing.clear()
        if data:
            self.server.receive(self.conn, data)
