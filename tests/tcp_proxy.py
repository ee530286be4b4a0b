"""A TCP proxy for tests that re-cuts the byte stream without changing a byte.

TCP promises the bytes and their order, never the boundaries: a record may
arrive one byte at a time, or glued to the next ones. On loopback that rarely
happens by itself, so this proxy makes it happen every time. It reads the
kit's records (u16 length + body) and forwards them in groups, alternately

- split: one send() per byte, with Nagle off, so each byte is its own segment;
- merged: the whole group in one send(), several records in one segment.

A group is GROUP_RECORDS records, or fewer once the sender has paused for
IDLE_FLUSH_SECONDS (the handshake, say, where one side waits for an answer).
Bytes that never make a whole record (a peer that vanished mid-record) are
forwarded when the sender closes.

    proxy = ChunkingProxy(server_port)    # then connect to proxy.port
    ...
    proxy.close()
"""
from __future__ import annotations

import select
import socket
import threading

GROUP_RECORDS = 3
IDLE_FLUSH_SECONDS = 0.02
LENGTH_BYTES = 2


class ChunkingProxy:
    """Listens on 127.0.0.1:port and relays every connection to target_port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.split_records = 0     # records sent one byte per segment
        self.merged_sends = 0      # sends that carried two records or more
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:   # close() shut the listener: stop
                return
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, destination: socket.socket) -> None:
        pending = bytearray()
        records: list[bytes] = []
        merge_next = True
        try:
            while True:
                # select() with a timeout, not a socket timeout: that would apply
                # to the other direction's sends on the same socket too.
                readable, _, _ = select.select([source], [], [], IDLE_FLUSH_SECONDS)
                data = source.recv(65536) if readable else None   # None: the sender paused
                if data == b"":
                    break
                if data:
                    pending += data
                    records += _take_records(pending)
                while len(records) >= GROUP_RECORDS or (data is None and records):
                    group, records = records[:GROUP_RECORDS], records[GROUP_RECORDS:]
                    self._forward(destination, group, merge_next)
                    merge_next = not merge_next
            for record in records:
                self._forward(destination, [record], merge=False)
            destination.sendall(pending)   # a record cut short by a vanished peer
            destination.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):   # a reset, or close() (ValueError: a closed socket)
            return

    def _forward(self, destination: socket.socket, group: list[bytes], merge: bool) -> None:
        if merge:
            destination.sendall(b"".join(group))
            with self._lock:
                self.merged_sends += len(group) > 1
        else:
            for record in group:
                for index in range(len(record)):
                    destination.sendall(record[index:index + 1])
            with self._lock:
                self.split_records += len(group)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def _take_records(pending: bytearray) -> list[bytes]:
    """Remove and return the whole records at the front of ``pending``."""
    records = []
    while len(pending) >= LENGTH_BYTES:
        size = LENGTH_BYTES + int.from_bytes(pending[:LENGTH_BYTES], "big")
        if len(pending) < size:
            break
        records.append(bytes(pending[:size]))
        del pending[:size]
    return records
