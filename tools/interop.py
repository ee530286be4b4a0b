"""Cross-test a class's submissions: every student's server with the kit's
client, every student's client with the kit's server, and (``--cross``)
every student's client with every student's server.

    python -m tools.interop SUBMISSIONS [--cross] [-k EXPR] [--jobs N] [--json FILE]
    make interop SUBMISSIONS=submissions/ [INTEROP_ARGS="--cross"]

SUBMISSIONS holds one folder per student; in it, the role files
(lab1_tcp/server.py, lab1_tcp/client.py, lab2_udp/server.py,
lab2_udp/client.py) are found at any depth, as the Gradescope autograder
finds them. Each pairing is one pytest run of that lab's black-box test
files with ``--role`` for the student's files and ``--grade-json`` for its
points; the result is a matrix per lab (a row per server, a column per
client) and, below it, every failed test of every pairing.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import ATTACH_VARIABLE, ROLE_OVERRIDES_VARIABLE, run_nested

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "reference"
LABS = ("lab1_tcp", "lab2_udp")
# A pairing whose pytest run outlives this has hung beyond every test's own deadline.
RUN_TIMEOUT_SECONDS = 60 * 60


def _autograder_script():
    """tools/autograder/run_autograder, imported: it knows the role files and
    how to find them in a submission."""
    path = ROOT / "tools" / "autograder" / "run_autograder"
    loader = importlib.machinery.SourceFileLoader("run_autograder", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


_AUTOGRADER = _autograder_script()
submitted_roles = _AUTOGRADER.submitted_roles
# A pairing runs each lab's main black-box file: the matrix stays quick for a class (the
# autograder grades a lab's whole category, hostile peers included).
TESTS_OF_LAB: dict[str, list[str]] = {"lab1_tcp": ["tests/test_lab1.py"], "lab2_udp": ["tests/test_lab2.py"]}


@dataclass
class Pairing:
    """One lab's server and client, each a student's name or REFERENCE."""
    lab: str
    server: str
    client: str
    roles: dict[str, Path]                 # role module -> the student's file
    report: dict = field(default_factory=dict)
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.lab}: server {self.server} x client {self.client}"


def find_students(submissions: Path) -> dict[str, dict[str, Path]]:
    """Student name (the folder's) -> role module -> file, for folders with a role file."""
    students = {}
    for folder in sorted(path for path in submissions.iterdir() if path.is_dir()):
        roles = submitted_roles(folder)
        if roles:
            students[folder.name] = roles
    return students


def plan(students: dict[str, dict[str, Path]], cross: bool) -> list[Pairing]:
    """The pairings to run: each student role against the reference, and with
    ``cross`` each student's client against each student's server."""
    pairings = []
    for lab in LABS:
        server_module, client_module = f"{lab}.server", f"{lab}.client"
        servers = {name: roles[server_module] for name, roles in students.items() if server_module in roles}
        clients = {name: roles[client_module] for name, roles in students.items() if client_module in roles}
        for name, path in servers.items():
            pairings.append(Pairing(lab, name, REFERENCE, {server_module: path}))
        for name, path in clients.items():
            pairings.append(Pairing(lab, REFERENCE, name, {client_module: path}))
        if cross:
            for server_name, server_path in servers.items():
                for client_name, client_path in clients.items():
                    pairings.append(Pairing(lab, server_name, client_name,
                                            {server_module: server_path, client_module: client_path}))
    return pairings


def run(pairing: Pairing, folder: Path, pytest_args: list[str]) -> Pairing:
    """Grade one pairing in a pytest subprocess; fill in its report or its error."""
    report = folder / "grades.json"
    # Only this pairing's --role options count, and every server is one the tests start.
    env = {key: value for key, value in os.environ.items() if key not in (ROLE_OVERRIDES_VARIABLE, ATTACH_VARIABLE)}
    # The labs' black-box tests use no hypothesis: its plugin stays out (a second of CPU a run).
    command = [sys.executable, "-m", "pytest", *TESTS_OF_LAB[pairing.lab], "-p", "no:cacheprovider", "-q",
               "-p", "no:hypothesispytest",
               *[f"--role={module}={path}" for module, path in pairing.roles.items()],
               "--grade-json", str(report), *pytest_args]
    try:
        completed = run_nested(command, timeout=RUN_TIMEOUT_SECONDS, cwd=ROOT, env=env)
        log = completed.stdout + completed.stderr
    except subprocess.TimeoutExpired:
        log = f"pytest did not finish within {RUN_TIMEOUT_SECONDS} s"
    if report.exists():
        pairing.report = json.loads(report.read_text(encoding="utf-8"))
    else:
        pairing.error = "no report: " + (log.strip().splitlines() or ["pytest printed nothing"])[-1]
    return pairing


def cell(pairing: Pairing | None) -> str:
    if pairing is None:
        return "."
    if pairing.error:
        return "error"
    return f"{pairing.report['earned']:g}/{pairing.report['possible']:g}"


def matrix(pairings: list[Pairing], lab: str) -> list[str]:
    """One lab's table: a row per server, a column per client."""
    of_lab = {(pairing.server, pairing.client): pairing for pairing in pairings if pairing.lab == lab}
    if not of_lab:
        return []
    names = sorted({name for pair in of_lab for name in pair} - {REFERENCE})
    people = [REFERENCE, *names]
    rows = [["server \\ client", *people]]
    rows += [[server, *(cell(of_lab.get((server, client))) for client in people)] for server in people]
    widths = [max(len(row[column]) for row in rows) for column in range(len(people) + 1)]
    title = f"{lab} ({' '.join(TESTS_OF_LAB[lab])}): points earned/possible"
    return [title, *("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in rows)]


def failures(pairings: list[Pairing]) -> list[str]:
    """Every test that did not pass, by pairing, with its one-line reason."""
    lines = []
    for pairing in pairings:
        if pairing.error:
            lines.append(f"{pairing.label}: {pairing.error}")
        for nodeid, result in pairing.report.get("tests", {}).items():
            if result["outcome"] != "passed":
                lines.append(f"{pairing.label}: {nodeid.split('::')[-1]} {result['outcome']}: "
                             f"{result.get('reason', '')}"[:240])
    return lines


def report_lines(pairings: list[Pairing]) -> list[str]:
    lines = []
    for lab in LABS:
        table = matrix(pairings, lab)
        if table:
            lines += [*table, ""]
    not_passed = failures(pairings)
    lines += ["not passed:" if not_passed else "every test of every pairing passed", *not_passed]
    return lines


def as_json(pairings: list[Pairing]) -> list[dict]:
    return [{"lab": pairing.lab, "server": pairing.server, "client": pairing.client,
             "roles": {module: str(path) for module, path in pairing.roles.items()},
             "error": pairing.error, **pairing.report} for pairing in pairings]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.interop", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="a folder holding one folder per student")
    parser.add_argument("--cross", action="store_true",
                        help="also run each student's client against each student's server")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="run only the tests pytest -k EXPR selects")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help="pytest runs at once (default: 2)")
    parser.add_argument("--test-deadline", metavar="SECONDS", help="each test's deadline, as pytest's option")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every pairing's report to FILE")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    students = find_students(args.submissions)
    if not students:
        parser.error(f"no role file (lab1_tcp/server.py, ...) in any folder of {args.submissions}")
    pytest_args = [*(["-k", args.keyword] if args.keyword else []),
                   *(["--test-deadline", args.test_deadline] if args.test_deadline else [])]
    pairings = plan(students, args.cross)
    print(f"{len(students)} students, {len(pairings)} pairings, {args.jobs} at a time", flush=True)
    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        folders = [Path(work) / str(number) for number in range(len(pairings))]
        for folder in folders:
            folder.mkdir()
        list(pool.map(run, pairings, folders, [pytest_args] * len(pairings)))
    print("\n".join(report_lines(pairings)))
    if args.json:
        args.json.write_text(json.dumps(as_json(pairings), indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
