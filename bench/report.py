"""Run every bench and write docs/performance.md and its plot (``make bench``).

    python bench/report.py            # the full runs (several minutes); writes the docs
    python bench/report.py --quick    # under a minute; prints the report, writes nothing
    python bench/report.py --only window   # the server's window row alone: rewrites its section

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

import batching_model  # noqa: E402
import lab1_throughput  # noqa: E402
import lab2_fanout  # noqa: E402
import signatures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC, PLOT = ROOT / "docs" / "performance.md", ROOT / "docs" / "performance.png"
README = ROOT / "README.md"
# The README's performance line sits between these two lines; `make bench` rewrites it.
README_START, README_END = "<!-- performance: written by make bench -->", "<!-- end of performance -->"
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


def model_table(rows: list[dict]) -> str:
    lines = ["| load | rule | what it does | wait p50 ms | wait p99 ms | lines/datagram |",
             "|---|---|---|---:|---:|---:|"]
    rules = lab2_fanout.BATCHING_CANDIDATES
    lines += [f"| {r['load']} | {r['candidate']} | {lab2_fanout.describe(rules[r['candidate']])} | "
              f"{r['wait_p50_ms']:.2f} | {r['wait_p99_ms']:.2f} | {r['lines_per_datagram']:.2f} |" for r in rows]
    return "\n".join(lines)


def readme_line(busy: dict, very_busy: dict, raw_busy: dict, raw_very_busy: dict) -> str:
    """The README's performance line: what the member alone saw at both paced rates."""
    def at(row: dict, raw: dict) -> str:
        return (f"p50 {float(row['alone_p50_ms']):.1f} ms, p99 {float(row['alone_p99_ms']):.1f} ms "
                f"(the plain relay: {float(raw['alone_p50_ms']):.1f} / {float(raw['alone_p99_ms']):.1f} ms)")
    return (f"**Performance** (`make bench`, [docs/performance.md](docs/performance.md)): in a room of "
            f"{busy['members']} members, a member with a process of its own sees each line {at(busy, raw_busy)} "
            f"at one line per {busy['interval_ms']} ms from each member, and {at(very_busy, raw_very_busy)} at one "
            f"per {very_busy['interval_ms']} ms, on a shared {os.cpu_count()}-core machine (load average "
            f"{os.getloadavg()[0]:.1f}).")


def write_readme_line(line: str) -> None:
    text = README.read_text(encoding="utf-8")
    before, start, rest = text.partition(README_START)
    _old, end, after = rest.partition(README_END)
    if not (start and end):
        raise SystemExit(f"README.md lacks the lines {README_START} ... {README_END}")
    README.write_text(f"{before}{start}\n{line}\n{end}{after}", encoding="utf-8")


def model_summary(model: list[dict]) -> str:
    """What the model says of the shipped rule, against the fixed windows."""
    def row(load: str, candidate: str) -> dict:   # load: "busy" or "very busy"
        return next(r for r in model if r["load"].startswith(load + " room") and r["candidate"] == candidate)
    busy, short, long = (row("busy", name) for name in ("shipped", "fixed 3 ms", "fixed 15 ms"))
    very_busy, very_long = row("very busy", "shipped"), row("very busy", "fixed 15 ms")
    return f"""No rule has both the small wait of a short window and the few datagrams of a long one in a
{busy["load"]}: a datagram of k events makes its first event wait for the k-1 after it. The
shipped rule sits between them there (wait p50 {busy["wait_p50_ms"]:.1f} ms against {short["wait_p50_ms"]:.1f} and
{long["wait_p50_ms"]:.1f} ms; {busy["lines_per_datagram"]:.1f} lines per datagram against
{short["lines_per_datagram"]:.1f} and {long["lines_per_datagram"]:.1f}). In a {very_busy["load"]} it fills
datagrams as the 15 ms window does ({very_busy["lines_per_datagram"]:.1f} lines against
{very_long["lines_per_datagram"]:.1f}) with a p99 wait of {very_busy["wait_p99_ms"]:.1f} ms against
{very_long["wait_p99_ms"]:.1f} ms. A quiet room's events never wait."""


WINDOW_HEADING = "## The server's window"


def window_section(rows: list[dict], plan: lab2_fanout.Plan) -> str:
    """docs/performance.md's section on the server's window, from its heading to the next one."""
    if not rows:
        return f"{WINDOW_HEADING}\n\n(No rows: Xvfb is not installed.)\n"
    window = next(row for row in rows if row["front_end"] != "headless")
    return f"""{WINDOW_HEADING}

{lab2_fanout.TABLES["window"][0]}. The server runs headless, then with its Tk window open on
a private X display (Xvfb, Linux only), {plan.window_repeats} times; the {plan.paced_members}
members of the paced room listen. "p99 / headless" compares each window run with the headless
run of the same round (aim: within 1.5); a round that did not finish is left out of it. "p99 of
all rounds" pools every latency of every round of one server: on a loaded machine one round's
p99 is a few unlucky moments, and the rounds alternate, so both servers met the same load.
"load average" is the machine's (1 minute) as each run began: other programs' share of the cores.

{lab2_fanout.render(lab2_fanout.TABLES["window"][1], rows, markdown=True)}

What makes the window cost what a terminal costs (`common/ui.py`): its loop waits in `select()`
for the sockets, as the terminal's does, for at most `POLL_INTERVAL_MS`, then lets Tk handle its
own events, so a packet is served the moment it arrives; it draws what a turn showed in one
insert into its transcript, not one widget call a line; and it keeps its newest `WINDOW_LINES`
(3000) lines. (The earlier loop sat in Tk's `mainloop()` and polled the sockets from a Tk timer:
a packet waited for the timer. With batched inserts, and a Tk file handler on the selector to
poll at once, it still measured 2.0-2.8 times the headless p99 here, quick mode, load about 65.)
Room p99 with the window, round by round: {window["p99_x_headless"]:.2f} times the headless
server's; all rounds together: {window["pooled_p99_x_headless"]:.2f}.
"""


def write_window_section(section: str) -> None:
    """Put ``section`` in place of docs/performance.md's section on the server's window."""
    text = DOC.read_text(encoding="utf-8")
    before, heading, rest = text.partition(WINDOW_HEADING)
    if not heading:
        raise SystemExit(f"{DOC.name} lacks the heading {WINDOW_HEADING!r}: run the whole report")
    _old, next_heading, after = rest.partition("\n## ")
    DOC.write_text(f"{before}{section}{next_heading}{after}", encoding="utf-8")


def pick(rows: list[dict], **match) -> dict:
    return next((row for row in rows if all(row.get(k) == v for k, v in match.items())), {})


def report(quick: bool) -> tuple[str, str]:
    """docs/performance.md's text, and the README's performance line."""
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
    model = batching_model.measure_all(lab2_fanout.BATCHING_CANDIDATES)
    plan = lab2_fanout.PLANS[quick]
    batching = tables["batching"]
    slowest, fastest = plan.paced_intervals_ms[0], plan.paced_intervals_ms[-1]
    quiet, quiet_raw = (pick(batching, members=1, candidate=name) for name in ("shipped", "raw"))
    shipped_light, light_raw = (pick(batching, members=plan.paced_members, interval_ms=slowest, candidate=name)
                                for name in ("shipped", "raw"))
    shipped_heavy, heavy_raw = (pick(batching, members=plan.paced_members, interval_ms=fastest, candidate=name)
                                for name in ("shipped", "raw"))
    biggest = max((row for row in tables["members"] if row["system"] == "kit"),
                  key=lambda row: row["members"])
    storm_quiet = pick(tables["storm"], system="kit", storm=0)
    every_row = [row for rows in tables.values() for row in rows]

    def matched(system: str) -> str:
        runs = [row for row in every_row if row.get("system", "kit") == system]
        return f"{sum(row['match'].startswith('yes') for row in runs)} of {len(runs)}"
    storm = next(row for row in tables["storm"] if row["system"] == "kit" and row["storm"])
    return readme_line(shipped_light, shipped_heavy, light_raw, heavy_raw), f"""# Performance

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
- **A quiet room** ({quiet["workload"]}): the member saw p50 {quiet["alone_p50_ms"]:.1f} ms,
  {quiet["alone_p50_over_raw_ms"]:.1f} ms more than with the plain relay in the same run (aim: within 1 ms).
- **Latency at light load** ({shipped_light["workload"]}): the member alone saw p50
  {shipped_light["alone_p50_ms"]:.1f} ms, p99 {shipped_light["alone_p99_ms"]:.1f} ms
  (the plain relay: {light_raw["alone_p50_ms"]:.1f} / {light_raw["alone_p99_ms"]:.1f} ms);
  over all simulated members p50 {shipped_light["p50_ms"]:.1f} ms.
- **Latency at heavy load** ({shipped_heavy["workload"]}): p50 {shipped_heavy["alone_p50_ms"]:.1f} ms,
  p99 {shipped_heavy["alone_p99_ms"]:.1f} ms for the member alone (the plain relay:
  {heavy_raw["alone_p50_ms"]:.1f} / {heavy_raw["alone_p99_ms"]:.1f} ms), p99 {shipped_heavy["p99_ms"]:.1f} ms
  over all (aim: under 100 ms); the rest is the bench's members queueing on this machine's cores.
- **Server memory**: {biggest["kib_per_member"]:.0f} KiB per member at {biggest["members"]} members.
  Everyone leaving at once: survived: {biggest["survives_leaving"]}.
- **Transcripts** matched in {matched("kit")} kit runs; the raw relay's in {matched("raw")}
  (it has no order and no repair: once its receivers fall behind, screens differ).
- **Signatures**: keep one per datagram (see the last section).

## How to read the Lab 2 tables

A class has one member per machine, and each pays only for itself. The bench runs the
simulated members in {lab2_fanout.RECEIVER_PROCESSES} processes (at least one per core) and one
more process that holds a single member, "the member alone". Every simulated member does what
`lab2_udp/client.py` does: its datagram gate decides which datagrams are worth opening, and it
opens, verifies, orders and hashes those, repairs gaps over TCP, and falls back to TCP alone
when it hears nothing. The members join in waves no bigger than the server's login queue for
one address (they all come from 127.0.0.1), as a class behind one address would.

- **CPU/delivery us**: the receiver processes' CPU time over the events they delivered: what
  one member's machine spends per event it shows (decrypt, one signature check per datagram
  shared by the events in it, decode, order, hash, and its own sending).
  **by process**: the same for each receiver process, the member alone's last.
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

Every datagram costs every receiver a signature check; every millisecond an event waits in
the server, every screen shows it later. The server's rule (`Batching` in `common/room.py`)
sends an event at once when the room was quiet for a moment, and in a busy room lets events
wait for company: until a few wait (a size trigger, with some spacing between datagrams) or
the oldest has waited a while. The rules compared (`BATCHING_CANDIDATES` in
`bench/lab2_fanout.py`; only the bench runs the others):

{chr(10).join(f"- **{name}**: {lab2_fanout.describe(rule)}" for name, rule in lab2_fanout.BATCHING_CANDIDATES.items())}

### What the rule itself adds

`bench/batching_model.py` drives the real `Room` with a made-up clock: lines arrive at
random at three rates, the room is ticked after each, and it wakes when it asks to. No
network, no crypto, no machine: only the wait each rule chooses, the same on every run.

{model_table(model)}

{model_summary(model)}

### Measured

{titles["batching"]} ({plan.batching_repeats} rounds). "alone p50 - raw" and "p99 / raw" compare each
run with the raw relay's run of the same round. Here the machine adds its own costs (the
network, the crypto, the bench's own members, and on a loaded machine, queueing behind other
programs): when the load average above is high, the busy rows measure that queueing more
than the rule, and the model above is the fairer comparison of the rules.

{rendered["batching"]}

{window_section(tables["window"], plan)}
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
    parser.add_argument("--only", choices=("window",),
                        help="run this row alone and rewrite its section of docs/performance.md")
    args = parser.parse_args()
    quick = args.quick
    if args.only == "window":
        section = window_section(lab2_fanout.measure_all(quick, ("window",))["window"], lab2_fanout.PLANS[quick])
        if quick:
            print(section)
        else:
            write_window_section(section)
            print(f"wrote the section {WINDOW_HEADING!r} of {DOC.relative_to(ROOT)}", file=sys.stderr)
        return 0
    line, text = report(quick)
    if quick:
        print(f"{text}\nREADME.md's performance line would be:\n{line}")
    else:
        DOC.write_text(text, encoding="utf-8")
        write_readme_line(line)
        print(f"wrote {DOC.relative_to(ROOT)}, {PLOT.relative_to(ROOT)} and the performance line of "
              f"{README.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
