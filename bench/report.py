"""Run every bench and write docs/performance.md and its plot (``make bench``).

    python bench/report.py            # the full runs (several minutes); writes the docs
    python bench/report.py --quick    # under a minute; prints the report, writes nothing

The plot needs matplotlib, a dev-only extra (``pip install -e '.[bench]'``,
which ``make bench`` does); without it the report says so and goes on.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab1_throughput  # noqa: E402
import lab2_fanout  # noqa: E402
import signatures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC, PLOT = ROOT / "docs" / "performance.md", ROOT / "docs" / "performance.png"
LAB1_SIZES = {False: (20000, 2000), True: (3000, 300)}   # messages, round trips


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in
                  (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
                  if line.startswith("model name")), platform.processor() or "unknown")
    load = "%.2f %.2f %.2f" % os.getloadavg()
    return (f"- CPU: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}\n"
            f"- Python {platform.python_version()}, cryptography "
            f"{importlib.metadata.version('cryptography')}\n"
            f"- load average when the runs began (1, 5, 15 min): {load}")


def plot(rows: list[dict]) -> str:
    """p50/p99 against members, kit and baseline; returns a line for the report."""
    try:
        import matplotlib
    except ImportError:
        return "(No plot: matplotlib is not installed; `make bench` installs it.)"
    matplotlib.use("Agg")   # no display needed
    from matplotlib import pyplot
    figure, axes = pyplot.subplots(figsize=(7, 4.2))
    series = (("kit", "p50_ms", "kit p50", "-o"), ("kit", "p99_ms", "kit p99", "--o"),
              ("kit", "alone_p50_ms", "kit, member alone, p50", "-^"),
              ("raw", "p50_ms", "raw relay p50", "-s"), ("raw", "p99_ms", "raw relay p99", "--s"))
    for system, key, label, style in series:
        points = [(row["members"], row[key]) for row in rows if row["system"] == system]
        axes.plot(*zip(*points), style, label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("members (each sends with 4 messages in flight)")
    axes.set_ylabel("latency, ms")
    axes.set_title("Lab 2 room: latency against members")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)
    return f"![p50 and p99 latency against members]({PLOT.name})"


def lab1_table(result: dict) -> str:
    plain, secure = result["plain"], result["encrypted"]
    lines = ["| link | messages/s | RTT p50 us | RTT p99 us |", "|---|---:|---:|---:|"]
    for label, row in (("plain socket (baseline)", plain), ("encrypted session", secure)):
        lines.append(f"| {label} | {row[0]:,.0f} | {row[1]:.1f} | {row[2]:.1f} |")
    ratios = [secure[i] / plain[i] for i in range(3)]
    lines.append(f"| encrypted / plain | {ratios[0]:.2f} | {ratios[1]:.2f} | {ratios[2]:.2f} |")
    return "\n".join(lines)


def signature_tables(pieces: dict, rows: list[dict]) -> str:
    lines = ["| piece | us |", "|---|---:|"]
    lines += [f"| {name[:-3]} | {value:.1f} |" for name, value in pieces.items() if name.endswith("_us")]
    lines += ["", "| scheme | us/datagram | x today | added latency | no member can forge | wire format |",
              "|---|---:|---:|---|---|---|"]
    lines += [f"| {r['scheme']} | {r['us']:.1f} | {r['vs_today']:.2f} | {r['latency']} | "
              f"{r['guarantee']} | {r['wire']} |" for r in rows]
    return "\n".join(lines)


def pick(rows: list[dict], **match) -> dict:
    return next((row for row in rows if all(row.get(k) == v for k, v in match.items())), {})


def report(quick: bool) -> str:
    started = time.monotonic()
    header = machine()
    messages, round_trips = LAB1_SIZES[quick]
    lab1 = lab1_throughput.measure_all(messages, round_trips, 100, rounds=3 if quick else 5)
    pieces, schemes = signatures.measure_all(quick)
    tables = lab2_fanout.measure_all(quick)
    figure = plot(tables["members"]) if not quick else "(No plot in --quick mode.)"
    rendered = {name: lab2_fanout.render(lab2_fanout.TABLES[name][1], rows, markdown=True)
                for name, rows in tables.items()}
    titles = {name: lab2_fanout.TABLES[name][0] for name in tables}
    batching = tables["batching"]
    light = [row for row in batching if row["workload"] == batching[0]["workload"]]
    heavy = [row for row in batching if row["workload"] == batching[-1]["workload"]]
    shipped = lab2_fanout.PLANS[quick].batch_windows_ms[0]
    biggest = max((row for row in tables["members"] if row["system"] == "kit"),
                  key=lambda row: row["members"])
    shipped_light, shipped_heavy = (pick(tables["batching"], workload=row["workload"],
                                         window_ms=shipped) for row in (light[0], heavy[0]))
    storm_quiet = pick(tables["storm"], system="kit", storm=0)
    every_row = [row for rows in tables.values() for row in rows]

    def matched(system: str) -> str:
        runs = [row for row in every_row if row.get("system", "kit") == system]
        return f"{sum(row['match'].startswith('yes') for row in runs)} of {len(runs)}"
    storm = next(row for row in tables["storm"] if row["system"] == "kit" and row["storm"])
    return f"""# Performance

Written by `make bench` (`bench/report.py`{" --quick" if quick else ""}); every table has its
baseline measured in the same run, on this machine:

{header}
- the whole report took {time.monotonic() - started:.0f} s{" (quick mode: small workloads)" if quick else ""}

The machine is shared: when its load average above is high, other programs took CPU
time from the runs, and latencies (p99 most) are worse than the kit alone would show.
Compare rows of one table, which ran minutes apart, rather than absolute numbers.

## In short

- **What a member pays.** At {shipped_heavy["workload"]} per member (the busiest paced room),
  one member used {shipped_heavy["member_cpu_pct"]:.1f}% of a core, {shipped_heavy["cpu_us_per_delivery"]:.0f} us per
  event shown ({shipped_heavy["per_datagram"]:.0f} events per datagram, so per signature check).
- **Latency at light load** ({shipped_light["workload"]} per member, {shipped:g} ms batching
  window): the member alone saw p50 {shipped_light["alone_p50_ms"]:.1f} ms (aim: under 3 ms);
  over all simulated members p50 {shipped_light["p50_ms"]:.1f} ms.
- **Latency at heavy load** ({shipped_heavy["workload"]} per member): p99
  {shipped_heavy["alone_p99_ms"]:.1f} ms for the member alone, {shipped_heavy["p99_ms"]:.1f} ms over all
  (aim: under 100 ms); the rest is the bench's members queueing on this machine's cores.
- **Server memory**: {biggest["kib_per_member"]:.0f} KiB per member at {biggest["members"]} members.
  Everyone leaving at once: survived: {biggest["survives_leaving"]}.
- **Transcripts** matched in {matched("kit")} kit runs; the raw relay's in {matched("raw")}
  (it has no order and no repair: once its receivers fall behind, screens differ).
- **Signatures**: keep one per datagram (see the last section).

## How to read the Lab 2 tables

A class has one member per machine, and each pays only for itself. The bench runs the
simulated members in {lab2_fanout.RECEIVER_PROCESSES} processes (at least one per core) and one
more process that holds a single member, "the member alone". Every simulated member opens,
verifies, orders and hashes every datagram, as `lab2_udp/client.py` does.

- **CPU/delivery us**: the receiver processes' CPU time over the events they delivered: what
  one member's machine spends per event it shows (decrypt, one signature check per datagram
  shared by the events in it, decode, order, hash, and its own sending).
- **member CPU %**: the share of one core one member used during the run.
- **p50/p99**: latency from a member's send to each member's delivery, over all pairs. With
  many members in one process, a datagram is handled by one member after another, so these
  include queueing that a class (one machine each) does not have. **alone p50/p99** is the
  member with a process of its own: closer to what a student sees.
- **server us/msg**: the server's CPU time per chat message (from /proc, 10 ms ticks).
- **lines/datagram**: events per datagram, so per signature check.
- baseline **raw**: a plain relay, TCP lines in, one plain UDP datagram out per line: no
  crypto, no order, no repair.

## Members: 10 to {max(row["members"] for row in tables["members"])}

{titles["members"]}. "server KiB/member" is the growth of the server's resident memory from
an empty room to a full one, over the members; "survives all leaving" is whether the
server was still running after every member closed its connection at once.

{rendered["members"]}

{figure}

## Paced rooms: {lab2_fanout.PLANS[quick].paced_members} members

{titles["paced"]} ({lab2_fanout.PLANS[quick].paced_messages} messages each; the rate limit is
raised for the bench). "send late p99" shows how far the bench's own senders fell behind
their schedule: when it is large, the machine was saturated.

{rendered["paced"]}

## Batching: latency against what receivers pay

{titles["batching"]}. The server sends an event at once when its last datagram went out at
least the window ago; otherwise the event waits for the window to pass (or for a full
datagram) and shares a datagram with what came meanwhile. The shipped window is
{shipped:g} ms. At light load a shorter window sends nearly every event in its own datagram:
lower latency, more signature checks per event; at heavy load the 1200-byte datagram limit
batches anyway, so the window matters little.

{rendered["batching"]}

At one message per {light[0]["workload"].split()[2]} ms per member, the member alone saw p50
{", ".join(f'{row["alone_p50_ms"]:.1f} ms at {row["window_ms"]:g} ms' for row in light)};
at the busy end ({heavy[0]["workload"]}), p99
{", ".join(f'{row["alone_p99_ms"]:.1f} ms at {row["window_ms"]:g} ms' for row in heavy)}.

## Login storm

{titles["storm"]}: {storm["storm"]} connections, each a handshake and a Register with the
default Argon2id cost. The hashes run in the server's two worker threads, off the loop, but
on this machine they compete with everything else for the same cores.

{rendered["storm"]}

Room p99 without the storm: {storm_quiet.get("p99_ms", float("nan")):.1f} ms; during it:
{storm["p99_ms"]:.1f} ms (member alone: {storm_quiet.get("alone_p99_ms", float("nan")):.1f} ms,
then {storm["alone_p99_ms"]:.1f} ms); the storm's logins took
{storm.get("storm_login_p50_ms", float("nan")):.0f} ms at the median.

## Lab 1: the encrypted session against a plain socket

`bench/lab1_throughput.py`: {messages} messages of 100 bytes echoed over loopback TCP, and
{round_trips} round trips timed one by one, median of the rounds.

{lab1_table(lab1)}

## Fewer signature checks per receiver?

`bench/signatures.py` times what one receiver pays per datagram with the kit's own code,
and prices schemes that keep the guarantee (no member can forge an event of the server's)
with fewer Ed25519 checks. None is in the kit: each needs new fields on the wire.

{signature_tables(pieces, schemes)}

Recommendation: keep one signature per datagram. The check is
{pieces["verify_us"]:.0f} us of the {pieces["full_open_us"]:.0f} us a receiver spends on a
datagram of {signatures.EVENTS_PER_DATAGRAM} events; decoding the events
({pieces["decode_us"]:.0f} us) is most of the rest, and no signature scheme removes it, so
the best scheme saves at most {100 * (1 - min(r["vs_today"] for r in schemes)):.0f}% and every
one adds latency (a chain delays an event until its checkpoint, TESLA until its key is
disclosed, and needs clocks in sync). The server's batching already spreads one signature
over many events exactly when the room is busy, without holding anything back when it is
quiet. If receivers were much weaker machines, a chain of 4 to 16 with a checkpoint at
least every batching window is the scheme to adopt, as a new datagram version.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads; print, write nothing")
    quick = parser.parse_args().quick
    text = report(quick)
    if quick:
        print(text)
    else:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
