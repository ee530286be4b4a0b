"""A few seconds of a Lab 2 room, for Gradescope's leaderboard: how many room
deliveries per second the server carries, and the p99 latency of a line.

The server is the real one (``python -m lab2_udp.server``) or a student's copy
of it (``--server PATH``); the members are bench/lab2_fanout.py's simulated
clients, each doing what lab2_udp/client.py does (its own encrypted session,
every datagram opened and its signature checked, delivery in order, repairs
over TCP). MEMBERS members each send MESSAGES lines, at most a few in flight,
and every member must deliver every line. A delivery is one line shown on one
member's screen; deliveries/s counts them from the first send to the last
delivery, and the latency of each is from its send to its delivery.

The numbers rank a class against itself on one grading machine; they are not
a measure of any other machine (docs/performance.md has the full bench). With
``--server``, the kit's own server runs next, in the same run, as a baseline:
the output line gives both, so a slow number on a busy machine shows as such.

    python bench/leaderboard.py [--server PATH] [--json]

The grader runs it with ``pytest --grade-leaderboard`` (tests/grading.py).
It exits 1, saying why on stderr, when the room does not carry every line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import lab2_fanout

MEMBERS = 8
MESSAGES = 600      # per member: 4,800 lines, 38,400 deliveries: a few seconds


def _run(pool: lab2_fanout.ReceiverPool, workdir: Path, server_file: Path | None) -> dict:
    """One throughput run of MEMBERS members against one server."""
    with lab2_fanout.Run(pool, "kit", MEMBERS, workdir, server_file=server_file) as run:
        run.connect()
        row = run.run("throughput", MESSAGES)
    if row["match"].startswith("did not finish: "):   # no numbers: the reason is all there is
        raise RuntimeError(row["match"].removeprefix("did not finish: "))
    if row["delivered_pct"] < 100 or row["match"] != "yes":
        raise RuntimeError(f"the room delivered {row['delivered_pct']:.1f}% of the lines; "
                           f"transcripts match: {row['match']}")
    return row


def measure(server_file: Path | None) -> dict:
    """Deliveries/s and p99 ms of the room. A student's server is measured
    with the kit's own right after it, in the same run, as the baseline that
    says how busy this machine was."""
    about = f"{MEMBERS} members, {MESSAGES} lines each, on loopback"
    pool = lab2_fanout.ReceiverPool()
    try:
        with tempfile.TemporaryDirectory(prefix="leaderboard_") as workdir:
            row = _run(pool, Path(workdir), server_file)
            if server_file:
                baseline = _run(pool, Path(workdir), None)
                about += (f"; the kit's server in the same run: {baseline['pairs_per_s']:,.0f} deliveries/s, "
                          f"p99 {baseline['p99_ms']:.1f} ms")
    finally:
        pool.close()
    return {"deliveries_per_s": row["pairs_per_s"], "p99_ms": row["p99_ms"], "about": about}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, metavar="PATH", help="a copy of lab2_udp/server.py to measure")
    parser.add_argument("--json", action="store_true", help="print the result as one line of JSON")
    args = parser.parse_args(argv)
    try:
        result = measure(args.server.resolve() if args.server else None)
    except (RuntimeError, OSError) as error:
        # One line: the grader quotes the last line of stderr as the reason.
        print(" ".join(line.strip() for line in str(error).splitlines() if line.strip()), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['deliveries_per_s']:,.0f} deliveries/s, p99 {result['p99_ms']:.1f} ms ({result['about']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
