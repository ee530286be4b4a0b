"""How long does a student wait for their first `make test`? The untouched
starter's whole suite against the finished kit's, run in the same process.

The starter (tools/starter.py, ``make starter``) is the kit with every
solution region a TODO that raises NotImplementedError: most black-box tests
fail. A failing test must fail as soon as the role under test has died or
printed its traceback (tests/procs.py), not wait out its deadline, so the
starter's suite should take no longer than the finished kit's. Both run as
``make test`` runs them, each under a deadline (a run past it is stopped and
reported as such); the table gives the seconds and the starter's ratio to
the kit, and the first failure the starter's run printed: it should name
the first TODO. Times vary with the machine and its load: only the ratio,
measured in one run, is worth comparing.

    python bench/starter_loop.py [--deadline SECONDS] [--pytest-args "-n 2"]
"""
from __future__ import annotations

import argparse
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.procs import run_nested  # noqa: E402
from tools.starter import write_starter  # noqa: E402

DEFAULT_DEADLINE_SECONDS = 900.0
# The options `make test` gives pytest (kit.py's test command).
DEFAULT_PYTEST_ARGS = "-n 4 --dist load --maxschedchunk 1"
_SUMMARY = re.compile(r"^=*\s*(\d+ (?:failed|passed).*?) in [\d.]+s")   # pytest's last line


@dataclass
class Run:
    name: str
    seconds: float
    cpu_seconds: float    # user + system of pytest and every process it started (and waited for)
    summary: str          # pytest's last line: "12 failed, 40 passed", or why there is none
    first_failure: str    # the first "FAILED ..." line of the short summary


def run_suite(name: str, folder: Path, pytest_args: list[str], deadline_seconds: float) -> Run:
    """Run the suite in ``folder`` as `make test` would; time it."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *pytest_args]
    cpu_before = children_cpu_seconds()
    started = time.monotonic()
    try:
        completed = run_nested(command, timeout=deadline_seconds, cwd=folder)
        output = completed.stdout
    except subprocess.TimeoutExpired as expired:   # stopped as Ctrl-C would: its tests stop their programs
        output = expired.stdout
        output += f"\n(stopped at the deadline of {deadline_seconds:g} s)"
    seconds = time.monotonic() - started
    cpu_seconds = children_cpu_seconds() - cpu_before
    lines = output.splitlines()
    summary = next((match.group(1) for match in map(_SUMMARY.match, reversed(lines)) if match),
                   lines[-1] if lines else "(no output)")
    # The short summary's first FAILED line (tests of the grader print FAILED lines of their own runs earlier).
    summary_start = max((index for index, text in enumerate(lines) if "short test summary info" in text), default=0)
    first_failure = next((line for line in lines[summary_start:] if line.startswith("FAILED ")), "(none)")
    return Run(name, seconds, cpu_seconds, summary, first_failure)


def children_cpu_seconds() -> float:
    """CPU seconds of the finished child processes: steadier than the wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_SECONDS,
                        help="stop a suite still running after SECONDS (default: %(default)g)")
    parser.add_argument("--pytest-args", default=DEFAULT_PYTEST_ARGS,
                        help="the options both suites run with (default: %(default)r)")
    parser.add_argument("--starter-only", action="store_true", help="run the starter's suite only (no ratio)")
    args = parser.parse_args(argv)
    pytest_args = shlex.split(args.pytest_args)
    with tempfile.TemporaryDirectory(prefix="starter-loop-") as folder:
        starter = Path(folder) / "starter"
        write_starter(starter)
        runs = [run_suite("starter (untouched)", starter, pytest_args, args.deadline)]
    if not args.starter_only:
        runs.append(run_suite("finished kit", ROOT, pytest_args, args.deadline))
    kit_seconds = runs[-1].seconds if not args.starter_only else None
    print(f"pytest {args.pytest_args}, deadline {args.deadline:g} s\n")
    print("| suite | seconds | CPU seconds | ratio to the kit | result |\n|---|---:|---:|---:|---|")
    for run in runs:
        ratio = f"{run.seconds / kit_seconds:.2f}" if kit_seconds else "-"
        print(f"| {run.name} | {run.seconds:.1f} | {run.cpu_seconds:.1f} | {ratio} | {run.summary} |")
    print(f"\nthe starter's first failure: {runs[0].first_failure}")
    if not args.starter_only and runs[-1].first_failure != "(none)":   # the finished kit should have none
        print(f"the finished kit's first failure: {runs[-1].first_failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
