"""A client written inside a test, to misbehave where a real one would not.

The black-box tests use it to reach a logged-in session and then send what no
honest client sends: half a record, a forged datagram, garbage.
"""
from __future__ import annotations

import socket

from common.config import load_settings
from common.messages import Message, Register
from common.session import SecureSession
from tests.procs import DEADLINE_SECONDS


def register_raw(port: int, env_file, name: str, password: str) -> tuple[socket.socket, SecureSession, list[Message]]:
    """Connect to 127.0.0.1:port with the keys of ``env_file``, complete the
    handshake and send Register, without waiting for the answer. Returns the
    socket, the session and the messages received so far."""
    settings = load_settings(env_file, create=False)
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS)
    session = SecureSession.client(settings.psk, settings.server_public_key)
    received: list[Message] = []
    while not session.established:
        send_queued(sock, session)
        received += session.receive(sock.recv(65536))
    session.send(Register(name, password))
    send_queued(sock, session)
    return sock, session, received


def receive_until(sock: socket.socket, session: SecureSession, received: list[Message], kind: type) -> Message:
    """Read until a message of type ``kind`` has arrived (the socket's timeout
    is the deadline); return it."""
    while not any(isinstance(message, kind) for message in received):
        received += session.receive(sock.recv(65536))
    return next(message for message in received if isinstance(message, kind))


def send_queued(sock: socket.socket, session: SecureSession) -> None:
    sock.sendall(session.outgoing)
    session.outgoing.clear()
