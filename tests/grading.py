"""The grading report: every test is worth the points of its marker.

    @pytest.mark.points(3)
    def test_dm_reaches_only_its_recipient(...): ...

At the end of every run pytest prints the points earned per test file and in
all. A test without a marker is worth 1 point. A parametrized test is worth
its points once, shared among its cases. A skipped test earns nothing, and
the report says so, because a skip (no Xvfb, say) is not a pass.

Options (docs/grading.md has the commands):

``--grade-json FILE``
    the points of every test, as JSON, for a gradebook.
``--grade-format gradescope|prairielearn|junit|json`` and ``--grade-output FILE``
    the same results in the format an autograding platform reads.
``--role lab2_udp.client=PATH``
    grade a student's copy of a role file: the black-box tests then start
    PATH wherever they would start that role.
``--attach HOST:PORT``, ``--attach-env FILE`` (default: .env),
``--attach-stdout FILE`` and ``--attach-stderr FILE``
    run the black-box tests against a server the student started by hand,
    under a debugger say, with the keys in its .env and its output sent to
    the two files: a test that would start that server uses it instead, and
    a test that needs to type into its terminal, or a server of its own, is
    skipped, saying so (docs/grading.md).
``--test-deadline SECONDS`` (default 120, or none with --attach; 0 turns it off)
    a test that runs longer fails, saying so: a hung student program costs
    that test's points and never hangs the grader. ``@pytest.mark.deadline(n)``
    gives one slow test its own deadline.

``@pytest.mark.hidden`` marks a test whose result students see only after the
due date (Gradescope's ``after_due_date``).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

import pytest

from tests.procs import ATTACH_VARIABLE, ROLE_OVERRIDES_VARIABLE, Attachment, parse_attach, role_overrides

_RESULTS_KEY = pytest.StashKey[dict]()
_STARTED_KEY = pytest.StashKey[float]()
_DEADLINE_KEY = pytest.StashKey[float]()

ROLES = ("lab1_tcp.server", "lab1_tcp.client", "lab2_udp.server", "lab2_udp.client")
FORMATS = ("json", "gradescope", "prairielearn", "junit")
DEFAULT_TEST_DEADLINE_SECONDS = 120.0
# A test that ran out of time still gets this long to clean up (kill its
# processes), so its teardown is not cut short by the same deadline.
TEARDOWN_GRACE_SECONDS = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grading", "the chat lab kit's grader")
    group.addoption("--grade-json", metavar="FILE", help="write the points of every test to FILE as JSON")
    group.addoption("--grade-format", choices=FORMATS, default="json",
                    help="format of --grade-output: " + ", ".join(FORMATS) + " (default: json)")
    group.addoption("--grade-output", metavar="FILE", help="write the results in --grade-format to FILE")
    group.addoption("--role", action="append", default=[], metavar="MODULE=PATH",
                    help="grade the file PATH in place of a role, e.g. lab2_udp.client=alice/client.py")
    group.addoption("--attach", metavar="HOST:PORT",
                    help="test the server started by hand at HOST:PORT (a loopback address) instead of "
                         "starting one; tests that need a server of their own or its terminal are skipped")
    group.addoption("--attach-env", metavar="FILE", default=".env",
                    help="the .env of the --attach server, for its keys (default: %(default)s)")
    group.addoption("--attach-stdout", metavar="FILE", help="the file the --attach server's stdout goes to")
    group.addoption("--attach-stderr", metavar="FILE", help="the file the --attach server's stderr goes to")
    group.addoption("--test-deadline", type=float, metavar="SECONDS",
                    help=f"fail any test still running after SECONDS (default: {DEFAULT_TEST_DEADLINE_SECONDS:g}, "
                         "or none with --attach; 0: never)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadline(seconds): this test's own --test-deadline")
    config.addinivalue_line("markers", "hidden: students see this result only after the due date")
    config.stash[_RESULTS_KEY] = {}
    config.stash[_STARTED_KEY] = time.monotonic()
    overrides = []
    for item in config.getoption("--role"):
        module, _, path = item.partition("=")
        if module not in ROLES:
            raise pytest.UsageError(f"--role {item}: {module!r} is none of the roles {', '.join(ROLES)}")
        if not os.path.isfile(path):
            raise pytest.UsageError(f"--role {item}: there is no file {path!r}")
        overrides.append(f"{module}={os.path.abspath(path)}")
    if overrides:   # the black-box tests start role processes through tests/procs.py, which reads this
        os.environ[ROLE_OVERRIDES_VARIABLE] = ",".join(overrides)
    if config.getoption("--attach"):
        os.environ[ATTACH_VARIABLE] = _attachment(config).to_json()


def _attachment(config: pytest.Config) -> Attachment:
    """--attach and its files, checked."""
    try:
        host, port = parse_attach(config.getoption("--attach"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    files = {}
    for option in ("--attach-env", "--attach-stdout", "--attach-stderr"):
        path = config.getoption(option)
        if path is not None and not os.path.isfile(path):
            raise pytest.UsageError(f"{option} {path}: no such file (start the server first)")
        files[option] = Path(path).resolve() if path else None
    return Attachment(host, port, files["--attach-env"], files["--attach-stdout"], files["--attach-stderr"])


# --- The per-test deadline ----------------------------------------------------------------

class TestDeadlineExceeded(Exception):
    """Raised inside a test that outlived its deadline."""

    __test__ = False   # a name that starts with "Test", but not a test class


def _deadline_seconds(item: pytest.Item) -> float:
    seconds = item.config.getoption("--test-deadline")
    if seconds is None and item.config.getoption("--attach"):
        return 0.0    # a server held at a breakpoint must not fail the test
    marker = item.get_closest_marker("deadline")
    if marker:
        return float(marker.args[0])
    return DEFAULT_TEST_DEADLINE_SECONDS if seconds is None else seconds


def _can_interrupt() -> bool:
    # SIGALRM exists on POSIX only, and Python runs signal handlers in the
    # main thread only: elsewhere the grader goes without a deadline.
    return hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _deadline_for_phase(item: pytest.Item, when: str):
    """Run one phase (setup, call, teardown) under what is left of the test's
    deadline. The alarm is armed only while the test's own code runs, never
    while pytest writes its report."""
    seconds = _deadline_seconds(item)
    if seconds <= 0 or not _can_interrupt():
        yield
        return
    if when == "setup":
        item.stash[_DEADLINE_KEY] = time.monotonic() + seconds
    left = item.stash[_DEADLINE_KEY] - time.monotonic()
    if when == "teardown":
        left = max(left, TEARDOWN_GRACE_SECONDS)
        message = f"{item.nodeid}: its teardown did not finish within {left:.0f} s"
    else:
        message = (f"{item.nodeid} did not finish within its deadline of {seconds:g} s: the program "
                   f"under test may be hung (--test-deadline, @pytest.mark.deadline)")

    def expire(_signum, _frame):
        raise TestDeadlineExceeded(message)

    # A pytest run inside a test (the kit's own tests of this plugin) must
    # hand the outer test its alarm back, minus the time it took.
    previous = signal.signal(signal.SIGALRM, expire)
    outer_seconds, _interval = signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_seconds:
            signal.setitimer(signal.ITIMER_REAL, max(outer_seconds - (time.monotonic() - started), 0.001))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _deadline_for_phase(item, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _deadline_for_phase(item, "call"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    with _deadline_for_phase(item, "teardown"):
        yield


# --- Collecting results ---------------------------------------------------------------------

def _failure_text(report: pytest.TestReport) -> tuple[str, str]:
    """What went wrong, in one line and in full."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2], ""          # (file, line, "Skipped: why")
    crash = getattr(report.longrepr, "reprcrash", None)
    # tests/wire_story.py adds what happened on the wire to a black-box test's failure.
    full = report.longreprtext + "".join(f"\n--- {name}\n{text}" for name, text in report.sections
                                         if name == "wire story")
    return (crash.message if crash else full).split("\n")[0], full


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("points")
    results = item.config.stash[_RESULTS_KEY]
    # A test has failed if any phase (setup, call, teardown) failed; it has
    # passed only if its call passed and nothing else failed.
    result = results.setdefault(item.nodeid, {
        "points": marker.args[0] if marker else 1, "outcome": "passed",
        "hidden": item.get_closest_marker("hidden") is not None,
        "reason": "", "details": "", "seconds": 0.0})
    result["seconds"] += report.duration
    if report.failed or report.skipped:
        reason, details = _failure_text(report)
        if report.failed:
            result["outcome"] = "failed"
        elif result["outcome"] != "failed":
            result["outcome"] = "skipped"
        result["reason"] = result["reason"] or f"{report.when}: {reason}"
        result["details"] += details


def by_function(results: dict[str, dict]) -> dict[str, list[tuple[str, dict]]]:
    """The cases of each test function (a parametrized test has several)."""
    cases: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for nodeid, result in results.items():
        cases[nodeid.split("[")[0]].append((nodeid, result))
    return cases


def _function_scores(results: dict[str, dict]) -> list[dict]:
    """One row per test function: points earned, possible and skipped, and why not all."""
    rows = []
    for function, cases in by_function(results).items():
        points = cases[0][1]["points"]
        share = points / len(cases)
        not_passed = [(nodeid, result) for nodeid, result in cases if result["outcome"] != "passed"]
        rows.append({
            "name": function, "points": points,
            "earned": share * sum(result["outcome"] == "passed" for _, result in cases),
            "skipped": share * sum(result["outcome"] == "skipped" for _, result in cases),
            "passed": all(result["outcome"] == "passed" for _, result in cases),
            "hidden": any(result["hidden"] for _, result in cases),
            "reason": "; ".join(f"{nodeid.split('::')[-1]} {result['outcome']}: {result['reason']}"
                                for nodeid, result in not_passed),
            "details": "\n".join(result["details"] for _, result in not_passed),
        })
    return rows


# --- The formats -------------------------------------------------------------------------------

def as_json(results: dict[str, dict], rows: list[dict]) -> dict:
    """The kit's own format: totals, and every case's points and outcome
    (and, unless it passed, why not in one line)."""
    tests = {}
    for nodeid, result in results.items():
        tests[nodeid] = {"points": result["points"], "outcome": result["outcome"]}
        if result["outcome"] != "passed":
            tests[nodeid]["reason"] = result["reason"]
    return {"earned": round(sum(row["earned"] for row in rows), 2),
            "possible": sum(row["points"] for row in rows), "tests": tests}


def _markdown(row: dict) -> str:
    """A failed test's output for Gradescope: why in a line, then the details."""
    if row["passed"]:
        return ""
    details = f"\n\n```\n{row['details']}\n```" if row["details"] else ""
    return row["reason"] + details


def as_gradescope(rows: list[dict], seconds: float, summary: str) -> dict:
    """Gradescope's results.json: one entry per test function; a test marked
    hidden shows its result only after the due date."""
    return {
        "score": round(sum(row["earned"] for row in rows), 2),
        "execution_time": round(seconds),
        "output": summary,
        "output_format": "md",
        "tests": [{
            "name": row["name"], "number": str(number),
            "score": round(row["earned"], 2), "max_score": row["points"],
            "status": "passed" if row["passed"] else "failed",
            "output": _markdown(row),
            "visibility": "after_due_date" if row["hidden"] else "visible",
        } for number, row in enumerate(rows, start=1)],
    }


def as_prairielearn(rows: list[dict], summary: str) -> dict:
    """PrairieLearn's external-grader results.json: a score from 0 to 1."""
    possible = sum(row["points"] for row in rows)
    return {
        "gradable": True,
        "score": sum(row["earned"] for row in rows) / possible if possible else 0.0,
        "message": summary,
        "output": summary,
        "tests": [{"name": row["name"], "points": round(row["earned"], 2), "max_points": row["points"],
                   "message": row["reason"] or "passed", "output": row["details"]} for row in rows],
    }


def as_junit(results: dict[str, dict], seconds: float) -> bytes:
    """JUnit XML: one testcase per case, with its points as a property."""
    outcomes = [result["outcome"] for result in results.values()]
    suite = ElementTree.Element("testsuite", name="chat-lab-kit", tests=str(len(outcomes)),
                                failures=str(outcomes.count("failed")), errors="0",
                                skipped=str(outcomes.count("skipped")), time=f"{seconds:.3f}")
    for nodeid, result in results.items():
        path, _, name = nodeid.partition("::")
        case = ElementTree.SubElement(suite, "testcase", classname=path.removesuffix(".py").replace("/", "."),
                                      name=name, time=f"{result['seconds']:.3f}")
        properties = ElementTree.SubElement(case, "properties")
        ElementTree.SubElement(properties, "property", name="points", value=str(result["points"]))
        if result["outcome"] != "passed":
            tag = "failure" if result["outcome"] == "failed" else "skipped"
            element = ElementTree.SubElement(case, tag, message=result["reason"])
            element.text = result["details"] or result["reason"]
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash[_RESULTS_KEY]
    if not results:
        return
    rows = _function_scores(results)
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])   # earned, possible, skipped
    for row in rows:
        file_row = by_file[row["name"].split("::")[0]]
        file_row[0] += row["earned"]
        file_row[1] += row["points"]
        file_row[2] += row["skipped"]
    lines = [f"{module} graded from {path}" for module, path in role_overrides().items()]
    width = max(map(len, by_file))
    for path, (earned, possible, skipped) in sorted(by_file.items()):
        note = f"  ({skipped:g} skipped)" if skipped else ""
        lines.append(f"{path:<{width}}  {earned:>6.1f} / {possible:<4g}{note}")
    earned = sum(row["earned"] for row in rows)
    possible = sum(row["points"] for row in rows)
    lines.append(f"{'total':<{width}}  {earned:>6.1f} / {possible:<4g}")
    terminalreporter.section("grading")
    for line in lines:
        terminalreporter.write_line(line)

    seconds = time.monotonic() - config.stash[_STARTED_KEY]
    summary = "```\n" + "\n".join(lines) + "\n```\n"
    writers = {
        "json": lambda: json.dumps(as_json(results, rows), indent=1),
        "gradescope": lambda: json.dumps(as_gradescope(rows, seconds, summary), indent=1),
        "prairielearn": lambda: json.dumps(as_prairielearn(rows, summary), indent=1),
        "junit": lambda: as_junit(results, seconds).decode("utf-8"),
    }
    outputs = [(config.getoption("--grade-json"), "json"),
               (config.getoption("--grade-output"), config.getoption("--grade-format"))]
    for path, kind in outputs:
        if path:
            with open(path, "w", encoding="utf-8") as report:
                report.write(writers[kind]())
