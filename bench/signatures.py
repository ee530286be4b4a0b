"""Could a receiver pay less than one Ed25519 check per room datagram, and
still be sure no member forged an event of the server's?

The room key (ChaCha20-Poly1305) proves only that the sender is *a member*;
the server's signature proves it is *the server*. Today every datagram
carries its own signature, and every receiver checks each one. This bench
times the pieces one receiver pays per datagram, with the kit's own code,
and prices schemes that keep the guarantee with fewer signature checks.
None of them is in the kit: each would change the wire format.

- today: open (decrypt) + one Ed25519 verify + decode, per datagram;
- chain of K: each datagram's hash goes into a chain, and every K-th datagram
  (or the next heartbeat) carries one signature over the chain's head: a
  receiver hashes every datagram and verifies once per K. A forged datagram
  breaks the chain, so the guarantee holds; but an event is shown only when
  its checkpoint arrives: up to K datagrams, or one heartbeat, later;
- TESLA (delayed key disclosure): each datagram carries an HMAC under a key
  the server discloses a little later, itself checked against a signed hash
  chain: a receiver pays one HMAC per datagram, but must hold every event
  until the key is disclosed, and needs clocks in sync to within that delay;
- verify when needed: check the signature only of datagrams whose packet
  number the receiver has not seen. The kit does this already (the replay
  window comes before the signature), so it saves only on duplicates.

    python bench/signatures.py [--quick]
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run from a clone without installing: make the kit's packages importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from common.framing import DatagramOpener, DatagramSealer  # noqa: E402
from common.messages import RoomBatch, RoomEvent, decode, encode  # noqa: E402
from common.transcript import read_room_datagram  # noqa: E402

EVENTS_PER_DATAGRAM = 8                  # a busy room's datagram, about 900 bytes
CHAIN_LENGTHS = (4, 16, 64)
TESLA_DISCLOSURE_DELAY_MS = 50           # at least the network's delay plus the clocks' skew
ROUNDS = 5


def per_call_us(call: Callable[[], object], calls: int) -> float:
    """Median over ROUNDS of the mean time of one call, in microseconds."""
    times = []
    for _round in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(times)


def measure_pieces(calls: int) -> dict[str, float]:
    """What one receiver spends on one datagram, piece by piece (us)."""
    signing_key = Ed25519PrivateKey.generate()
    room_key = os.urandom(32)
    sealer = DatagramSealer(signing_key)
    sealer.set_room_key(1, room_key)
    batch = RoomBatch(tuple(RoomEvent(seq, "say", f"member{seq % 50}", "x" * 90)
                            for seq in range(1, EVENTS_PER_DATAGRAM + 1)), EVENTS_PER_DATAGRAM)
    plaintext = encode(batch)
    datagrams = [sealer.seal(plaintext) for _ in range(calls * ROUNDS)]
    opener = DatagramOpener(signing_key.public_key().public_bytes_raw())
    opener.add_room_key(1, room_key)
    fresh = iter(datagrams)   # a new packet number each time, as on the wire
    signed, signature = datagrams[0][:-64], datagrams[0][-64:]
    public_key = signing_key.public_key()
    aead, nonce = ChaCha20Poly1305(room_key), bytes(12)
    sealed = aead.encrypt(nonce, plaintext, b"")
    mac_key = os.urandom(32)
    return {
        "datagram_bytes": len(datagrams[0]),
        "full_open_us": per_call_us(lambda: read_room_datagram(opener, next(fresh)), calls),
        "verify_us": per_call_us(lambda: public_key.verify(signature, signed), calls),
        "decrypt_us": per_call_us(lambda: aead.decrypt(nonce, sealed, b""), calls),
        "decode_us": per_call_us(lambda: decode(plaintext), calls),
        "sha256_us": per_call_us(lambda: hashlib.sha256(signed).digest(), calls),
        "hmac_us": per_call_us(lambda: hmac.digest(mac_key, signed, "sha256"), calls),
        "sign_us": per_call_us(lambda: signing_key.sign(signed), calls),
    }


def schemes(pieces: dict[str, float]) -> list[dict]:
    """Each scheme's cost per datagram for one receiver, and what it adds."""
    rest = pieces["full_open_us"] - pieces["verify_us"]   # decrypt, checks and decode
    rows = [{"scheme": "today: a signature per datagram", "us": pieces["full_open_us"],
             "latency": "none", "guarantee": "yes", "wire": "as is"}]
    for length in CHAIN_LENGTHS:
        rows.append({"scheme": f"chain of {length}, one signature each",
                     "us": rest + pieces["sha256_us"] + pieces["verify_us"] / length,
                     "latency": f"up to {length} datagrams or a heartbeat",
                     "guarantee": "yes", "wire": "new field"})
    rows.append({"scheme": "TESLA: HMAC, key disclosed later",
                 "us": rest + pieces["hmac_us"] + pieces["sha256_us"],
                 "latency": f"{TESLA_DISCLOSURE_DELAY_MS} ms or more, clocks in sync",
                 "guarantee": "yes, if clocks agree", "wire": "new fields"})
    rows.append({"scheme": "verify only unseen packet numbers", "us": pieces["full_open_us"],
                 "latency": "none", "guarantee": "yes", "wire": "as is (the kit does it)"})
    for row in rows:
        row["vs_today"] = row["us"] / pieces["full_open_us"]
    return rows


def measure_all(quick: bool) -> tuple[dict[str, float], list[dict]]:
    pieces = measure_pieces(500 if quick else 4000)
    return pieces, schemes(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per measurement")
    pieces, rows = measure_all(parser.parse_args().quick)
    print(f"One receiver, one {pieces['datagram_bytes']}-byte datagram of "
          f"{EVENTS_PER_DATAGRAM} events (us):")
    for name, value in pieces.items():
        if name.endswith("_us"):
            print(f"  {name[:-3]:12} {value:8.1f}")
    print(f"\n{'scheme':36}{'us/datagram':>12}{'x today':>9}  added latency")
    for row in rows:
        print(f"{row['scheme']:36}{row['us']:12.1f}{row['vs_today']:9.2f}  {row['latency']}")


if __name__ == "__main__":
    main()
