"""The key log: the keys of each session and room epoch, written down so a
capture of the traffic can be decrypted afterwards (by the tests' wire story).

It plays the part of TLS's SSLKEYLOGFILE: off unless asked for, with
``--keylog FILE`` on any role or the ``CHAT_KEYLOG`` environment variable.
A key log is a secret: whoever holds it reads every message it lists, the
passwords of logins included. The kit's tests write one per test, in a
temporary folder; never switch it on for a real class.

One line per key, appended as the keys come into use::

    NOISE <initiator's ephemeral public key> <initiator-to-responder key> <responder-to-initiator key>
    ROOM <epoch> <room key>

Keys are 64 hex digits. A capture finds a session's keys through the first
handshake record: its body starts with the initiator's ephemeral public key,
in clear (Noise's ``e`` token), so that key names the session. Lines that
start with ``#`` are comments; a reader skips any line it does not know, as
SSLKEYLOGFILE readers do, so one file may be shared by several programs.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from common.errors import ProtocolError
from common.noise import KEY_BYTES   # the transport keys; a room key is as long

ENVIRONMENT_VARIABLE = "CHAT_KEYLOG"
_HEADER = "# chat lab kit key log: anyone who holds this file can read the traffic it lists\n"


# --- The format, sans-IO ----------------------------------------------------------------------

def session_line(initiator_ephemeral: bytes, initiator_to_responder: bytes,
                 responder_to_initiator: bytes) -> str:
    """The NOISE line of one session's keys. Raises ProtocolError for a key
    that is not 32 bytes."""
    keys = (initiator_ephemeral, initiator_to_responder, responder_to_initiator)
    return "NOISE " + " ".join(_checked(key).hex() for key in keys) + "\n"


def room_line(epoch: int, key: bytes) -> str:
    """The ROOM line of one room epoch's key. Raises ProtocolError for a key
    that is not 32 bytes or a negative epoch."""
    if epoch < 0:
        raise ProtocolError(f"a room epoch is never negative, not {epoch}")
    return f"ROOM {epoch} {_checked(key).hex()}\n"


@dataclass
class KeyLog:
    """What a key log holds: session keys by the initiator's ephemeral key,
    and every room key seen for each epoch (two server runs in one log both
    start at epoch 1, so an epoch may have several keys)."""

    sessions: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)
    room_keys: dict[int, list[bytes]] = field(default_factory=dict)


def parse(text: str) -> KeyLog:
    """Read a key log. Comments, blank lines, unknown labels and malformed
    lines (a line cut short by a program still writing it, say) are skipped:
    a log is read while programs may still append to it."""
    log = KeyLog()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        label, *fields = line.split()
        try:
            if label == "NOISE" and len(fields) == 3:
                ephemeral, sending, receiving = (_key_from_hex(value) for value in fields)
                log.sessions[ephemeral] = (sending, receiving)
            elif label == "ROOM" and len(fields) == 2:
                epoch, key = int(fields[0]), _key_from_hex(fields[1])
                keys = log.room_keys.setdefault(epoch, [])
                if key not in keys:
                    keys.append(key)
        except ValueError:
            continue   # a malformed line: skipped, as the docstring says
    return log


def _checked(key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ProtocolError(f"a logged key is {KEY_BYTES} bytes, not {len(key)}")
    return key


def _key_from_hex(value: str) -> bytes:
    key = bytes.fromhex(value)
    if len(key) != KEY_BYTES:
        raise ValueError(f"a key is {KEY_BYTES * 2} hex digits")
    return key


# --- Writing it -------------------------------------------------------------------------------

class KeyLogWriter:
    """Appends lines to a key log file that several processes may share.

    Each line goes out in one write() on a file opened with O_APPEND, so the
    kernel puts it whole at the end of the file even when another process
    appends at the same moment. The file is created readable by its owner only.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size == 0:
            self.write(_HEADER)

    def write(self, line: str) -> None:
        os.write(self._fd, line.encode("ascii"))

    def close(self) -> None:
        os.close(self._fd)


# The process's key log, like OpenSSL's keylog callback: one for the whole
# program, so the sessions and datagram sealers need no extra argument.
_writer: KeyLogWriter | None = None
_environment_read = False


def open_key_log(path: str) -> KeyLogWriter:
    """Log this process's keys to ``path`` from now on (appending). It is the
    argparse ``type`` of ``--keylog``, so a bad path is a usage error."""
    global _writer
    try:
        writer = KeyLogWriter(path)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot open the key log {path}: {error.strerror}") from None
    close_key_log()
    _writer = writer
    return writer


def close_key_log() -> None:
    """Stop logging keys (the tests' plugin switches the log per test)."""
    global _writer
    if _writer is not None:
        _writer.close()
    _writer = None


def add_option(parser: argparse.ArgumentParser) -> None:
    """Give a role the ``--keylog FILE`` option (opened as it is parsed)."""
    parser.add_argument("--keylog", metavar="FILE", type=open_key_log,
                        help=f"append the session and room keys to FILE, so that a capture can be decrypted "
                             f"(default: ${ENVIRONMENT_VARIABLE}; a secret: whoever holds it reads the traffic)")


def export_session(initiator_ephemeral: bytes, initiator_to_responder: bytes,
                   responder_to_initiator: bytes) -> None:
    """Log a session's keys if a key log is open (common/session.py calls it
    when a handshake completes)."""
    writer = _current_writer()
    if writer is not None:
        writer.write(session_line(initiator_ephemeral, initiator_to_responder, responder_to_initiator))


def export_room_key(epoch: int, key: bytes) -> None:
    """Log a room key if a key log is open (common/framing.py calls it when
    a key is set)."""
    writer = _current_writer()
    if writer is not None:
        writer.write(room_line(epoch, key))


def _current_writer() -> KeyLogWriter | None:
    # CHAT_KEYLOG is read at the first key, as SSLKEYLOGFILE is: so the tests
    # can switch the log on for every program they start without any option.
    global _writer, _environment_read
    if _writer is None and not _environment_read:
        _environment_read = True
        path = os.environ.get(ENVIRONMENT_VARIABLE)
        if path:
            try:
                _writer = KeyLogWriter(path)
            except OSError as error:   # a debugging aid must never cost a peer its session
                print(f"{ENVIRONMENT_VARIABLE}: cannot open the key log {path}: {error.strerror}", file=sys.stderr)
    return _writer
