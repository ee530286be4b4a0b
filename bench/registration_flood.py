"""Do registrations from many addresses keep a member waiting at the door?

The real Lab 2 server, with the real (default) cost of a password hash. A
member who has an account logs in LOGINS times from 127.0.0.1, one after
another, and we time each from its Login to its LoginAccepted: first with
nothing else going on, then while ADDRESSES other loopback addresses each
register new accounts back to back (each its own handshake, Register and
answer), at most REGISTRATIONS_PER_ADDRESS each: a student making accounts
from every machine of a lab room.

    python bench/registration_flood.py [--quick]

It prints the member's login p50 and p99 (the largest, for so few) before
and during, and their ratios.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from lab2_fanout import start_kit_server  # noqa: E402

from common.config import load_settings  # noqa: E402
from common.messages import Login, LoginAccepted, LoginRejected, Register  # noqa: E402
from common.session import SecureSession  # noqa: E402

ADDRESSES = 49
REGISTRATIONS_PER_ADDRESS = 20   # the attack is bounded; it also stops when the member is done
PASSWORD = "bench password 1"
LOGINS = {False: 20, True: 8}    # per phase


def answer_to(room: dict, source: str, message) -> tuple[float, object]:
    """Connect from ``source``, handshake, send ``message``; the seconds from
    sending it to the LoginAccepted or LoginRejected, and that answer."""
    settings = load_settings(room["env_file"], create=False)
    with socket.create_connection(room["address"], timeout=60, source_address=(source, 0)) as sock:
        session = SecureSession.client(settings.psk, settings.server_public_key)
        sock.sendall(session.outgoing)
        session.outgoing.clear()
        while not session.established:
            session.receive(sock.recv(65536))
        session.send(message)
        started = time.monotonic()
        sock.sendall(session.outgoing)
        session.outgoing.clear()
        while True:
            data = sock.recv(65536)
            if not data:
                return time.monotonic() - started, None
            for received in session.receive(data):
                if isinstance(received, (LoginAccepted, LoginRejected)):
                    return time.monotonic() - started, received


def logins(room: dict, names: list[str]) -> list[float]:
    seconds = []
    for name in names:
        took, answer = answer_to(room, "127.0.0.1", Login(name, PASSWORD))
        if not isinstance(answer, LoginAccepted):
            raise SystemExit(f"{name} was not let in: {answer}")
        seconds.append(took * 1000)
    return seconds


def register_back_to_back(room: dict, address: int, stop: threading.Event, answered: list) -> None:
    for number in range(REGISTRATIONS_PER_ADDRESS):
        if stop.is_set():
            return
        try:
            _took, answer = answer_to(room, f"127.0.3.{address}", Register(f"flood_{address}_{number}", PASSWORD))
        except OSError:   # turned away at the door: try the next one
            continue
        answered.append(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer logins")
    count = LOGINS[parser.parse_args().quick]
    with tempfile.TemporaryDirectory() as tmp:
        room = start_kit_server(Path(tmp), "MAX_CLIENTS=500\n")
        try:
            names = [f"member_{number}" for number in range(2 * count)]
            for name in names:
                answer_to(room, "127.0.0.1", Register(name, PASSWORD))
            before = logins(room, names[:count])
            stop, answered = threading.Event(), []
            flood = [threading.Thread(target=register_back_to_back, args=(room, address, stop, answered))
                     for address in range(1, ADDRESSES + 1)]
            for thread in flood:
                thread.start()
            during = logins(room, names[count:])
            stop.set()
            for thread in flood:
                thread.join()
        finally:
            room["server"].stop()
    for label, seconds in (("before", before), ("during", during)):
        print(f"member's login {label}: p50 {statistics.median(seconds):.0f} ms, max {max(seconds):.0f} ms "
              f"({len(seconds)} logins)")
    print(f"during {len(answered)} registrations answered from {ADDRESSES} addresses: p50 ratio "
          f"{statistics.median(during) / statistics.median(before):.1f}, max ratio {max(during) / max(before):.1f}")


if __name__ == "__main__":
    main()
