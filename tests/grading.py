"""The grading report: every test is worth the points of its marker.

    @pytest.mark.points(3)
    def test_dm_reaches_only_its_recipient(...): ...

At the end of every run pytest prints the points earned per test file and in
all. A test without a marker is worth 1 point. A parametrized test is worth
its points once, shared among its cases. A skipped test earns nothing, and
the report says so, because a skip (no Xvfb, say) is not a pass. The one
exception: a test that needs Linux (tests/platforms.py), on macOS or Windows,
is "not run here", and its points leave the maximum, the report says how many.

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

``--grade-manifest FILE`` (default: tests/expected_tests.json, when it exists)
    the tests the suite must hold, with their points and categories (lab1,
    lab2, common, tools): a test of the manifest that was not collected
    (deleted, renamed, or in a file that failed to load) counts as failed,
    with its points, and the report names it "missing". Every format gives
    the totals per category. ``python -m tests.grading --write-manifest``
    writes the manifest, and the rubric at the end of each handout, anew.
``--grade-screenshots DIR``
    where a failed window test (``@pytest.mark.gui``) leaves a PNG of its
    Xvfb screen, taken before its teardown (default: screenshots/ beside the
    output file, else chat-lab-kit-screenshots/ in the temporary folder);
    PrairieLearn's results carry it as an image.
``--grade-leaderboard``
    run bench/leaderboard.py, a few seconds of a Lab 2 room (the --role
    server, if any), and put its deliveries/s and p99 latency in Gradescope's
    leaderboard; if it fails, the report says why and no points change.

``@pytest.mark.hidden`` marks a test whose result students see only after the
due date (Gradescope's ``after_due_date``).

With pytest-xdist (``-n 4``, as ``make test`` runs), each worker runs some
of the tests and sends the controller every test's report
with its points attached; the controller alone counts them, once each, and
writes the report and the files. The workers send the manifest's missing
tests too. The per-test deadline works in a worker as in a single run: a
worker runs its tests in its main thread.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from tests.platforms import NOT_RUN_HERE, not_run_here
from tests.tasks import TASK_OF_TEST, TASKS
from tests.procs import ATTACH_VARIABLE, ROLE_OVERRIDES_VARIABLE, TODO_ALARM, Attachment, parse_attach, role_overrides
from tests.xvfb import screenshot

# Which tests need Linux, and their skip on other platforms (reported as not run here).
pytest_plugins = ["tests.platforms"]

_RESULTS_KEY = pytest.StashKey[dict]()
_STARTED_KEY = pytest.StashKey[float]()
_DEADLINE_KEY = pytest.StashKey[float]()
_MANIFEST_KEY = pytest.StashKey[dict]()      # the manifest's tests, or {} when there is none
_MISSING_KEY = pytest.StashKey[dict]()       # results of the manifest's tests not collected
_DESELECTED_KEY = pytest.StashKey[list]()    # node ids that -k, -m or --deselect left out
_COLLECTED_KEY = pytest.StashKey[dict]()     # node id -> (points, hidden) of every test this run selected

KIT_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_NAME = "tests/expected_tests.json"
WRITE_MANIFEST_COMMAND = ".venv/bin/python -m tests.grading --write-manifest"
CATEGORIES = ("lab1", "lab2", "common", "tools")
HANDOUTS = {"lab1": "docs/lab1.md", "lab2": "docs/lab2.md"}
# PrairieLearn takes a results.json of at most 1 MB: the screenshots get most of it, the text the rest.
PRAIRIELEARN_IMAGE_BYTES = 700_000
LEADERBOARD_SECONDS = 90      # the benchmark takes a few; a hung student server must not hold the grader

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
    group.addoption("--grade-manifest", metavar="FILE",
                    help=f"the tests the suite must hold (default: {MANIFEST_NAME}, if it exists): "
                         "one not collected counts as failed, named missing")
    group.addoption("--grade-category", action="append", metavar="NAME", choices=CATEGORIES,
                    help="run only the tests of this category (" + ", ".join(CATEGORIES) + "; "
                         "may be given again), as the manifest or the test's name and file say")
    group.addoption("--grade-task", action="append", metavar="LAB.N", choices=[task.name for task in TASKS],
                    help="run only the tests of one task of a handout (lab1.1, lab1.2, ...; may be given "
                         "again), as the manifest says: the handout names each task's command")
    group.addoption("--write-manifest", metavar="FILE",
                    help=f"write the collected tests' points and categories to FILE (with --collect-only; "
                         f"{WRITE_MANIFEST_COMMAND} writes {MANIFEST_NAME} and the handouts' rubrics)")
    group.addoption("--grade-screenshots", metavar="DIR",
                    help="where a failed @pytest.mark.gui test leaves a PNG of its screen "
                         "(default: screenshots/ beside --grade-output or --grade-json)")
    group.addoption("--grade-leaderboard", action="store_true",
                    help="measure the Lab 2 room (bench/leaderboard.py) for Gradescope's leaderboard")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Counter(config), f"chat-lab-grading-counter-{id(config)}")
    config.addinivalue_line("markers", "deadline(seconds): this test's own --test-deadline")
    config.addinivalue_line("markers", "hidden: students see this result only after the due date")
    config.stash[_RESULTS_KEY] = {}
    config.stash[_STARTED_KEY] = time.monotonic()
    config.stash[_MISSING_KEY] = {}
    config.stash[_DESELECTED_KEY] = []
    config.stash[_MANIFEST_KEY] = _read_manifest(config)
    if config.stash[_MANIFEST_KEY]:
        # A test file that fails to load costs its own tests' points, not the
        # whole run: the other files still run.
        config.option.continue_on_collection_errors = True
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
        todo = TODO_ALARM.take() if when != "teardown" else None   # a role reached a TODO (tests/procs.py)
        if todo is not None:
            raise AssertionError(todo)
        raise TestDeadlineExceeded(message)

    # A pytest run inside a test (the kit's own tests of this plugin) must
    # hand the outer test its alarm back, minus the time it took.
    previous = signal.signal(signal.SIGALRM, expire)
    outer_seconds, _interval = signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
    if when == "setup":
        TODO_ALARM.take()   # nothing of an earlier test's roles
        TODO_ALARM.cancel()
    outer_listening = TODO_ALARM.listen(when != "teardown")
    started = time.monotonic()
    try:
        yield
    finally:
        TODO_ALARM.listen(outer_listening)
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


# --- The manifest: the tests the suite must hold ----------------------------------------------

# A test's category is its lab when its name says so (test_lab1_..., test_lab2_...), else its file's.
CORE_TESTS_WITHOUT_A_MODULE = ("test_conversation",)   # the core's whole conversation, without sockets
# Tests of the kit's own programs, which no --role reaches (the demo starts the kit's role files):
# they grade the kit, never a student's lab.
KIT_PROGRAM_TESTS = ("test_the_instructor_demo_ends_with_every_screen_the_same",
                     "test_windowed_demo_plays_the_class_in_tiles_and_every_screen_ends_with_one_hash",
                     "test_lab2_demo_plays_to_the_same_screens_under_windows_simulation",
                     "test_the_demo_where_loopback_cannot_broadcast_still_loses_and_repairs",
                     "test_the_lossy_relay_hears_and_forwards_a_multicast_room",   # the relay is the kit's too
                     "test_the_demo_counts_a_run_of_hidden_messages_as_every_number_it_covers")
MANIFEST_MARKERS = ("network", "gui", "hidden")       # the markers -m may select on


def category_of(nodeid: str) -> str:
    """lab1, lab2, common or tools. A test of the kit's own programs
    (KIT_PROGRAM_TESTS) grades the kit; a test named test_lab1_... or
    test_lab2_... grades that lab wherever it is; otherwise its file says: test_lab1*.py,
    test_lab2*.py and test_lan.py grade a lab, a file named for a module of
    common/ grades the core, and the rest grade the kit's shape and tools."""
    path, _, name = nodeid.partition("::")
    stem = Path(path).stem
    if name in KIT_PROGRAM_TESTS:
        return "tools"
    for lab in ("lab1", "lab2"):
        if name.startswith(f"test_{lab}_"):
            return lab
    for lab in ("lab1", "lab2"):
        if stem.startswith(f"test_{lab}"):
            return lab
    if stem == "test_lan":
        return "lab2"
    if stem in CORE_TESTS_WITHOUT_A_MODULE or (KIT_ROOT / "common" / f"{stem.removeprefix('test_')}.py").exists():
        return "common"
    return "tools"


def task_of(nodeid: str) -> str:
    """The handout task a lab's test checks (tests/tasks.py: lab1.2), or ""."""
    name = nodeid.partition("::")[2].split("[")[0]
    return TASK_OF_TEST.get(name, "") if category_of(nodeid) in HANDOUTS else ""


def _read_manifest(config: pytest.Config) -> dict[str, dict]:
    """The manifest's tests by function node id; {} when this run has none."""
    option = config.getoption("--grade-manifest")
    path = Path(option).resolve() if option else config.rootpath / MANIFEST_NAME
    if option and not path.is_file():
        raise pytest.UsageError(f"--grade-manifest {option}: no such file")
    if config.getoption("--write-manifest") or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["tests"]


def manifest_text(items: list[pytest.Item]) -> str:
    """The manifest of these collected tests, one test a line (diffs stay readable)."""
    tests = {}
    for item in items:
        function = item.nodeid.split("[")[0]
        marker = item.get_closest_marker("points")
        markers = sorted({mark.name for mark in item.iter_markers()} & set(MANIFEST_MARKERS))
        tests[function] = {"points": marker.args[0] if marker else 1, "category": category_of(function),
                           "markers": markers}
        task = task_of(function)
        if task:
            tests[function]["task"] = task
    lines = [f"  {json.dumps(function)}: {json.dumps(entry)}" for function, entry in sorted(tests.items())]
    return ('{\n "written by": ' + json.dumps(WRITE_MANIFEST_COMMAND) + ',\n "tests": {\n'
            + ",\n".join(lines) + "\n }\n}\n")


def _asked_for(config: pytest.Config, function: str, entry: dict) -> bool:
    """Whether this run asked for a test: its file, or the test itself, is
    among the run's arguments, no --ignore or --deselect leaves it out, and
    it matches -k, -m and --grade-category. A test that was not asked for is
    not missing."""
    categories, markers = config.getoption("--grade-category"), entry["markers"]
    if categories and entry["category"] not in categories:
        return False
    tasks = config.getoption("--grade-task")
    if tasks and entry.get("task") not in tasks:
        return False
    path, _, name = function.partition("::")
    file = (config.rootpath / path).resolve()
    here = config.invocation_params.dir

    def covers(argument: str) -> bool:
        argument_path, _, argument_name = argument.partition("::")
        target = (here / argument_path).resolve()
        if argument_name:
            return file == target and argument_name.split("[")[0] == name
        return file == target or target in file.parents

    if not any(map(covers, config.args)):
        return False
    if any(covers(ignored) for ignored in config.getoption("ignore") or []):
        return False
    if any(function == deselected.split("[")[0] for deselected in config.getoption("deselect") or []):
        return False
    names = [name, Path(path).name, *Path(path).parent.parts, *markers]
    keyword, marks = config.option.keyword, config.option.markexpr
    if keyword and not Expression.compile(keyword).evaluate(
            lambda word, **_: any(word.lower() in candidate.lower() for candidate in names)):
        return False
    return not marks or Expression.compile(marks).evaluate(lambda mark, **_: mark in markers)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With --grade-category or --grade-task, a test file that holds none of
    the manifest's tests of those is not even imported: a task's command
    starts testing at once."""
    categories, tasks = config.getoption("--grade-category"), config.getoption("--grade-task")
    manifest = config.stash.get(_MANIFEST_KEY, {})
    if not (categories or tasks) or not manifest or not collection_path.name.startswith("test_") \
            or collection_path.suffix != ".py":
        return None
    wanted = {config.rootpath / function.partition("::")[0] for function, entry in manifest.items()
              if (not categories or entry["category"] in categories) and (not tasks or entry.get("task") in tasks)}
    return True if collection_path not in wanted else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--grade-category and --grade-task: leave out the tests of the other
    categories and tasks."""
    categories, tasks = config.getoption("--grade-category"), config.getoption("--grade-task")
    if not categories and not tasks:
        return
    manifest = config.stash[_MANIFEST_KEY]

    def wanted(item: pytest.Item) -> bool:
        function = item.nodeid.split("[")[0]
        entry = manifest.get(function) or {"category": category_of(function), "task": task_of(function)}
        return (not categories or entry["category"] in categories) and (not tasks or entry.get("task") in tasks)

    left_out = [item for item in items if not wanted(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if wanted(item)]


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[_DESELECTED_KEY].extend(item.nodeid for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    output = config.getoption("--write-manifest")
    if output:
        if session.testsfailed:
            pytest.exit(f"--write-manifest: {session.testsfailed} file(s) failed to collect; fix them first",
                        returncode=pytest.ExitCode.USAGE_ERROR)
        Path(output).write_text(manifest_text(session.items), encoding="utf-8")
        return
    config.stash[_COLLECTED_KEY] = {
        item.nodeid: (item.get_closest_marker("points").args[0] if item.get_closest_marker("points") else 1,
                      item.get_closest_marker("hidden") is not None) for item in session.items}
    collected = {nodeid.split("[")[0] for nodeid in
                 [*(item.nodeid for item in session.items), *config.stash[_DESELECTED_KEY]]}
    for function, entry in config.stash[_MANIFEST_KEY].items():
        if function not in collected and _asked_for(config, function, entry):
            config.stash[_MISSING_KEY][function] = {
                "points": entry["points"], "outcome": "failed", "hidden": "hidden" in entry["markers"],
                "reason": f"missing: in {MANIFEST_NAME} but not collected (deleted, renamed, or its file "
                          "failed to load)",
                "details": "", "seconds": 0.0, "missing": True}


def _is_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker, whose results go to the controller."""
    return hasattr(config, "workerinput")


# Where a worker sends the controller what it found missing (pytest-xdist's workeroutput).
_WORKER_MISSING = "chat_lab_missing"


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _is_worker(session.config):
        session.config.workeroutput[_WORKER_MISSING] = session.config.stash[_MISSING_KEY]
    # A missing test is a failed test: the run fails, as it would had the
    # test been there and failed (CI, GitHub Classroom's pass/fail steps).
    if session.config.stash[_MISSING_KEY] and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- Screenshots of failed window tests ---------------------------------------------------------

# The fixtures that hand a test its Xvfb's DISPLAY (tests/xvfb.py; tests/test_ui.py's windows in-process).
DISPLAY_FIXTURES = ("xvfb_display", "window_display")


def _screenshot_folder(config: pytest.Config) -> Path:
    option = config.getoption("--grade-screenshots")
    if option:
        return Path(option)
    output = config.getoption("--grade-output") or config.getoption("--grade-json")
    if output:
        return Path(output).resolve().parent / "screenshots"
    return Path(tempfile.gettempdir()) / "chat-lab-kit-screenshots"


def _screenshot_of_failure(item: pytest.Item) -> str:
    """A PNG of the screen of a failed window test, taken while its windows
    are still open (before the fixtures' teardown); its path, or why none."""
    # Only a private Xvfb of the tests is ever photographed, never a real desktop.
    display = next((item.funcargs[name] for name in DISPLAY_FIXTURES if name in item.funcargs), None)
    if display is None:
        return ""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) + ".png"
    try:
        return str(screenshot(display, _screenshot_folder(item.config) / name))
    except (OSError, subprocess.SubprocessError) as error:
        return f"(no screenshot: {error})"


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


# The attribute of a test's report that carries what grading needs of the
# test itself (its points, whether hidden, the screenshot of its failure):
# it travels with the report from a pytest-xdist worker to the controller.
GRADING_ATTRIBUTE = "chat_lab_grading"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("points")
    # Whether the test needs Linux and this is not Linux (tests/platforms.py) is decided
    # here, where the test itself is known: a pytest-xdist controller has only its report.
    grading = {"points": marker.args[0] if marker else 1,
               "hidden": item.get_closest_marker("hidden") is not None, "screenshot": "",
               "not_run_here": not_run_here(item)}
    if report.when == "call" and report.failed and item.get_closest_marker("gui"):
        grading["screenshot"] = _screenshot_of_failure(item)
    setattr(report, GRADING_ATTRIBUTE, grading)


class _Counter:
    """Counts the reports of one run (a plugin object, so that a pytest run
    inside a test, as the kit's own tests of this plugin make, counts its own)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """One phase of a test: run here, or on a worker (then this is the controller)."""
        grading = getattr(report, GRADING_ATTRIBUTE, None)
        if grading is not None:      # None: not a test's phase (a report of pytest-xdist's, say)
            _count(self.config.stash[_RESULTS_KEY], report, grading)

    @pytest.hookimpl(optionalhook=True)     # pytest-xdist's hook, on the controller
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        """The tests the workers selected (each worker the same), with their points from the
        manifest: an interrupted run (the autograder's deadline) counts those it did not
        finish, as a run without workers does from its own collection."""
        if _COLLECTED_KEY in self.config.stash:
            return
        manifest = self.config.stash[_MANIFEST_KEY]
        entries = {nodeid: manifest.get(nodeid.split("[")[0]) for nodeid in ids}
        self.config.stash[_COLLECTED_KEY] = {
            nodeid: (entry["points"], "hidden" in entry["markers"]) if entry else (1, False)
            for nodeid, entry in entries.items()}

    @pytest.hookimpl(optionalhook=True)     # pytest-xdist's hook: a run without it has no such hook
    def pytest_testnodedown(self, node, error) -> None:
        """pytest-xdist, on the controller: a worker ended; add what it found missing."""
        self.config.stash[_MISSING_KEY].update(getattr(node, "workeroutput", {}).get(_WORKER_MISSING, {}))


def _count(results: dict[str, dict], report: pytest.TestReport, grading: dict) -> None:
    # A test has failed if any phase (setup, call, teardown) failed; it has
    # passed only if its call passed and nothing else failed.
    result = results.setdefault(report.nodeid, {
        "points": grading["points"], "outcome": "passed", "hidden": grading["hidden"],
        "reason": "", "details": "", "seconds": 0.0})
    result["seconds"] += report.duration
    result["called"] = result.get("called", False) or report.when == "call"
    if report.failed or report.skipped:
        reason, details = _failure_text(report)
        if report.failed:
            result["outcome"] = "failed"
        elif result["outcome"] != "failed":
            result["outcome"] = NOT_RUN_HERE if grading["not_run_here"] else "skipped"
        result["reason"] = result["reason"] or f"{report.when}: {reason}"
        result["details"] += details
        for name, text in report.sections:
            if name == "wire story":    # tests/wire_story.py: what the black-box test saw on the wire
                result["wire_story"] = text
    shot = grading["screenshot"]
    if shot.endswith(".png"):
        result["screenshot"] = shot
    if shot:
        result["details"] += f"\nscreenshot of the screen when it failed: {shot}\n"


def by_function(results: dict[str, dict]) -> dict[str, list[tuple[str, dict]]]:
    """The cases of each test function (a parametrized test has several)."""
    cases: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for nodeid, result in results.items():
        cases[nodeid.split("[")[0]].append((nodeid, result))
    return cases


def _function_scores(results: dict[str, dict], manifest: dict[str, dict]) -> list[dict]:
    """One row per test function: points earned, possible and skipped, and why not all."""
    rows = []
    for function, cases in by_function(results).items():
        # With a manifest, it sets the points: a clone cannot raise a test's marker, and a
        # test it added is worth nothing.
        points = manifest[function]["points"] if function in manifest else 0 if manifest else cases[0][1]["points"]
        share = points / len(cases)
        not_passed = [(nodeid, result) for nodeid, result in cases if result["outcome"] != "passed"]
        # A case that needs Linux, elsewhere, leaves the maximum: not run here is neither pass nor fail.
        not_here = share * sum(result["outcome"] == NOT_RUN_HERE for _, result in cases)
        rows.append({
            "name": function, "points": points - not_here, "not_run_here": not_here,
            "category": manifest[function]["category"] if function in manifest else category_of(function),
            "earned": share * sum(result["outcome"] == "passed" for _, result in cases),
            "skipped": share * sum(result["outcome"] == "skipped" for _, result in cases),
            "passed": all(result["outcome"] == "passed" for _, result in cases),
            "missing": any(result.get("missing") for _, result in cases),
            "unlisted": bool(manifest) and function not in manifest,
            "hidden": any(result["hidden"] for _, result in cases),
            "reason": "; ".join(f"{nodeid.split('::')[-1]} {result['outcome']}: {result['reason']}"
                                for nodeid, result in not_passed),
            "details": "\n".join(result["details"] for _, result in not_passed),
            "screenshots": [result["screenshot"] for _, result in not_passed if "screenshot" in result],
        })
    # In the order a student reads them, whatever order the tests ran in (the longest first, on
    # several workers): Lab 1's, then Lab 2's, the shared code's and the tools', each by name.
    rank = {category: index for index, category in enumerate(CATEGORIES)}
    return sorted(rows, key=lambda row: (rank.get(row["category"], len(rank)), row["name"]))


def category_totals(rows: list[dict]) -> dict[str, dict]:
    """Points earned and possible per category (lab1, lab2, common, tools)."""
    totals: dict[str, dict] = {}
    for row in rows:
        total = totals.setdefault(row["category"], {"earned": 0.0, "possible": 0})
        total["earned"] += row["earned"]
        total["possible"] += row["points"]
    return {category: {"earned": round(totals[category]["earned"], 2), "possible": totals[category]["possible"]}
            for category in CATEGORIES if category in totals}


# --- The leaderboard: a few seconds of the student's room ---------------------------------------

def measure_leaderboard() -> tuple[list[dict], str]:
    """Run bench/leaderboard.py on the Lab 2 server being graded (the --role
    one, else the kit's); return Gradescope's leaderboard and a line saying
    what it measured, or no leaderboard and why. It never costs points."""
    command = [sys.executable, str(KIT_ROOT / "bench" / "leaderboard.py"), "--json"]
    server = role_overrides().get("lab2_udp.server")
    if server:
        command += ["--server", str(server)]
    # Its own session: on a timeout the whole group goes (the server and the
    # simulated members are its children).
    process = subprocess.Popen(command, cwd=KIT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=LEADERBOARD_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):   # it may have ended just now
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return [], f"leaderboard left out: the benchmark did not finish within {LEADERBOARD_SECONDS} s"
    if process.returncode != 0:
        last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "no output")
        return [], f"leaderboard left out: the benchmark failed: {last}"
    measured = json.loads(stdout.splitlines()[-1])
    board = [{"name": "deliveries/s", "value": round(measured["deliveries_per_s"]), "order": "desc"},
             {"name": "p99 ms", "value": round(measured["p99_ms"], 1), "order": "asc"}]
    return board, (f"leaderboard: {board[0]['value']} deliveries/s, p99 {board[1]['value']} ms "
                   f"({measured['about']})")


# --- The formats -------------------------------------------------------------------------------

def as_json(results: dict[str, dict], rows: list[dict], leaderboard: list[dict]) -> dict:
    """The kit's own format: totals, per category, and every case's points
    and outcome (and, unless it passed, why not in one line)."""
    tests = {}
    for nodeid, result in results.items():
        tests[nodeid] = {"points": result["points"], "outcome": result["outcome"]}
        if result["outcome"] != "passed":
            tests[nodeid]["reason"] = result["reason"]
        if "screenshot" in result:
            tests[nodeid]["screenshot"] = result["screenshot"]
        if "wire_story" in result:
            tests[nodeid]["wire_story"] = result["wire_story"]
    report = {"earned": round(sum(row["earned"] for row in rows), 2),
              "possible": sum(row["points"] for row in rows), "categories": category_totals(rows),
              "not_run_here": round(sum(row["not_run_here"] for row in rows), 2),
              "missing": [row["name"] for row in rows if row["missing"]],
              "not_graded": [row["name"] for row in rows if row["unlisted"]], "tests": tests}
    if leaderboard:
        report["leaderboard"] = leaderboard
    return report


def _markdown(row: dict) -> str:
    """A failed test's output for Gradescope: why in a line, then the details."""
    if row["passed"]:
        return ""
    details = f"\n\n```\n{row['details']}\n```" if row["details"] else ""
    return row["reason"] + details


def as_gradescope(rows: list[dict], seconds: float, summary: str, leaderboard: list[dict]) -> dict:
    """Gradescope's results.json: one entry per test function, tagged with its
    category; a test marked hidden shows its result only after the due date."""
    results = {
        "score": round(sum(row["earned"] for row in rows), 2),
        "execution_time": round(seconds),
        "output": summary,
        "output_format": "md",
        "extra_data": {"categories": category_totals(rows)},
        "tests": [{
            "name": row["name"], "number": str(number),
            "score": round(row["earned"], 2), "max_score": row["points"],
            "status": "passed" if row["passed"] else "failed",
            "output": _markdown(row), "tags": [row["category"]],
            "visibility": "after_due_date" if row["hidden"] else "visible",
        } for number, row in enumerate(rows, start=1)],
    }
    if leaderboard:
        results["leaderboard"] = leaderboard
    return results


def as_prairielearn(rows: list[dict], summary: str) -> dict:
    """PrairieLearn's external-grader results.json: a score from 0 to 1; a
    failed window test carries a picture of its screen, as a data URL, while
    the pictures fit in PrairieLearn's limit on the file."""
    possible = sum(row["points"] for row in rows)
    image_bytes_left = PRAIRIELEARN_IMAGE_BYTES
    tests = []
    for row in rows:
        test = {"name": row["name"], "description": f"category {row['category']}",
                "points": round(row["earned"], 2), "max_points": row["points"],
                "message": row["reason"] or "passed", "output": row["details"]}
        for path in row["screenshots"]:
            url = "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
            if len(url) > image_bytes_left:
                test["output"] += f"\n(screenshot {path} left out: the results would pass PrairieLearn's 1 MB)"
                continue
            image_bytes_left -= len(url)
            test.setdefault("images", []).append({"label": f"the screen when it failed ({Path(path).name})",
                                                  "url": url})
        tests.append(test)
    return {
        "gradable": True,
        "score": sum(row["earned"] for row in rows) / possible if possible else 0.0,
        "message": summary,
        "output": summary,
        "categories": category_totals(rows),
        "tests": tests,
    }


def as_junit(results: dict[str, dict], rows: list[dict], seconds: float) -> bytes:
    """JUnit XML, valid under pytest's xunit2 schema: one testcase per case;
    the suite's properties hold the totals per category and each case's
    points and category."""
    outcomes = [result["outcome"] for result in results.values()]
    suite = ElementTree.Element("testsuite", name="chat-lab-kit", tests=str(len(outcomes)),
                                failures=str(outcomes.count("failed")), errors="0",
                                skipped=str(outcomes.count("skipped")), time=f"{seconds:.3f}")
    totals = ElementTree.SubElement(suite, "properties")
    for category, total in category_totals(rows).items():
        ElementTree.SubElement(totals, "property", name=f"points {category}",
                               value=f"{total['earned']:g}/{total['possible']:g}")
    # xunit2 (pytest's junit_family) allows properties on the suite only: each case's share of its
    # test's points, as the manifest sets them, and its category, go there, named by the case.
    row_of = {row["name"]: row for row in rows}
    cases = by_function(results)
    for nodeid in results:
        row = row_of[nodeid.split("[")[0]]
        share = row["points"] / len(cases[row["name"]])
        ElementTree.SubElement(totals, "property", name=f"points {nodeid}", value=f"{share:g} ({row['category']})")
    for nodeid, result in results.items():
        path, _, name = nodeid.partition("::")
        case = ElementTree.SubElement(suite, "testcase", classname=path.removesuffix(".py").replace("/", "."),
                                      name=name, time=f"{result['seconds']:.3f}")
        if result["outcome"] != "passed":
            tag = "failure" if result["outcome"] == "failed" else "skipped"
            element = ElementTree.SubElement(case, tag, message=result["reason"])
            element.text = result["details"] or result["reason"]
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


def _report_lines(rows: list[dict]) -> list[str]:
    """The grading section: points per file, per category, in all, and every missing test."""
    # earned, possible, skipped, not run here (needs Linux)
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for row in rows:
        file_row = by_file[row["name"].split("::")[0]]
        file_row[0] += row["earned"]
        file_row[1] += row["points"]
        file_row[2] += row["skipped"]
        file_row[3] += row["not_run_here"]
    categories = category_totals(rows)
    lines = [f"{module} graded from {path}" for module, path in role_overrides().items()]
    width = max(map(len, [*by_file, *(f"category {name}" for name in categories)]))
    for path, (earned, possible, skipped, not_here) in sorted(by_file.items()):
        notes = [f"{skipped:g} skipped"] * bool(skipped)
        notes += [f"{not_here:g} {NOT_RUN_HERE}, needs Linux"] * bool(not_here)
        note = f"  ({', '.join(notes)})" if notes else ""
        lines.append(f"{path:<{width}}  {earned:>6.1f} / {possible:<4g}{note}")
    for name, total in categories.items():
        lines.append(f"{'category ' + name:<{width}}  {total['earned']:>6.1f} / {total['possible']:<4g}")
    earned = sum(row["earned"] for row in rows)
    possible = sum(row["points"] for row in rows)
    lines.append(f"{'total':<{width}}  {earned:>6.1f} / {possible:<4g}")
    # By name: pytest-xdist's workers report in any order.
    not_here = sorted((row for row in rows if row["not_run_here"]), key=lambda row: row["name"])
    if not_here:
        points = sum(row["not_run_here"] for row in not_here)
        lines.append(f"{NOT_RUN_HERE} ({len(not_here)} tests that need Linux, {points:g} points left out of "
                     "the total; tests/platforms.py says why):")
        lines += [f"  {row['name']}" for row in not_here]
    missing = [row for row in rows if row["missing"]]
    if missing:
        lines.append(f"missing ({len(missing)} of {MANIFEST_NAME}, {sum(row['points'] for row in missing):g} "
                     "points, counted as failed):")
        lines += [f"  {row['name']}  ({row['points']:g} points)" for row in missing]
    unlisted = [row["name"] for row in rows if row["unlisted"]]
    if unlisted:
        lines.append(f"not graded ({len(unlisted)} not in {MANIFEST_NAME}, worth 0 points):")
        lines += [f"  {name}" for name in unlisted]
    return lines


def _not_finished(config: pytest.Config) -> dict[str, dict]:
    """The selected tests an interrupted run (Ctrl-C, or the autograder's own
    deadline: tools/autograder/run_autograder) did not finish: each counts as
    failed, with its points, so the report still gives what did finish."""
    results = config.stash[_RESULTS_KEY]
    why = "not finished: the run was stopped before this test ended (the grader's deadline, or Ctrl-C)"
    unfinished = {}
    for nodeid, (points, hidden) in config.stash.get(_COLLECTED_KEY, {}).items():
        result = results.get(nodeid)
        if result is None or (result["outcome"] == "passed" and not result["called"]):
            unfinished[nodeid] = {"points": points, "outcome": "failed", "hidden": hidden, "reason": why,
                                  "details": "", "seconds": result["seconds"] if result else 0.0}
    return unfinished


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = {**config.stash[_RESULTS_KEY], **config.stash[_MISSING_KEY]}
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        results.update(_not_finished(config))
    if not results or config.option.collectonly or _is_worker(config):
        return
    rows = _function_scores(results, config.stash[_MANIFEST_KEY])
    lines = _report_lines(rows)
    leaderboard: list[dict] = []
    if config.getoption("--grade-leaderboard"):
        leaderboard, said = measure_leaderboard()
        lines.append(said)
    terminalreporter.section("grading")
    for line in lines:
        terminalreporter.write_line(line)

    seconds = time.monotonic() - config.stash[_STARTED_KEY]
    summary = "```\n" + "\n".join(lines) + "\n```\n"
    writers = {
        "json": lambda: json.dumps(as_json(results, rows, leaderboard), indent=1),
        "gradescope": lambda: json.dumps(as_gradescope(rows, seconds, summary, leaderboard), indent=1),
        "prairielearn": lambda: json.dumps(as_prairielearn(rows, summary), indent=1),
        "junit": lambda: as_junit(results, rows, seconds).decode("utf-8"),
    }
    outputs = [(config.getoption("--grade-json"), "json"),
               (config.getoption("--grade-output"), config.getoption("--grade-format"))]
    for path, kind in outputs:
        if path:
            with open(path, "w", encoding="utf-8") as report:
                report.write(writers[kind]())


# --- The handouts' rubrics, from the manifest ------------------------------------------------------

RUBRIC_START = "<!-- rubric: written from tests/expected_tests.json by `python -m tests.grading --write-manifest` -->"
RUBRIC_END = "<!-- end of rubric -->"


def rubric(manifest: dict[str, dict], lab: str) -> str:
    """The rubric a handout ends with: the points of its lab's tests, file by
    file, then every category of the whole suite."""
    def tally(entries) -> tuple[int, float]:
        entries = list(entries)
        return len(entries), sum(entry["points"] for entry in entries)

    files: dict[str, list[dict]] = defaultdict(list)
    for function, entry in manifest.items():
        if entry["category"] == lab:
            files[function.split("::")[0]].append(entry)
    about = textwrap.fill(
        f"Points come from the tests, each worth the points of its `@pytest.mark.points` marker; these are "
        f"the tests of the category `{lab}` in `{MANIFEST_NAME}`. A test of the manifest that a clone does "
        "not have (deleted, renamed, or in a file that fails to load) counts as failed, with its points, "
        "and the report names it missing.", width=100)
    lines = [RUBRIC_START, "## Rubric", "", about, "", "| tests | count | points |", "|---|---:|---:|"]
    for path, entries in sorted(files.items()):
        count, points = tally(entries)
        lines.append(f"| `{path}` | {count} | {points:g} |")
    count, points = tally(entry for entries in files.values() for entry in entries)
    lines += [f"| **{lab}** | **{count}** | **{points:g}** |", "",
              "The whole suite (`make test`), by category:", "",
              "| category | count | points |", "|---|---:|---:|"]
    for category in CATEGORIES:
        count, points = tally(entry for entry in manifest.values() if entry["category"] == category)
        lines.append(f"| {category} | {count} | {points:g} |")
    count, points = tally(manifest.values())
    lines += [f"| **total** | **{count}** | **{points:g}** |", RUBRIC_END, ""]
    return "\n".join(lines)


def with_rubric(handout: str, text: str) -> str:
    """The handout with its rubric replaced, or added at its end."""
    before, found, _after = handout.partition(RUBRIC_START)
    return (before if found else handout.rstrip("\n") + "\n\n") + text


TASKS_START = ("<!-- tasks: written from tests/tasks.py and tests/expected_tests.json by "
               "`python -m tests.grading --write-manifest` -->")
TASKS_END = "<!-- end of tasks -->"
# Four tests at a time, as make test runs them: a task's tests mostly wait on programs and sockets
# (Lab 2's task 4: 45 s one after another, 26 s so).
TASK_COMMAND = ".venv/bin/python -m pytest -n 4 --grade-task {name}"


def tasks_section(manifest: dict[str, dict], lab: str, solved: bool = False) -> str:
    """The handout's tasks: for each, the command that checks it, the TODO
    regions it fills in and every test of it with its points. ``solved``: a
    students' copy with this lab's regions written (make starter LAB=2 gives
    Lab 1 so)."""
    number = lab.removeprefix("lab")
    tasks = [task for task in TASKS if task.lab == lab]
    regions = sum(len(task.regions) for task in tasks)
    in_this_copy = (f"In this copy of the kit Lab {number}'s {regions} regions are written already, as the "
                    "solution has them: the tasks below name them, to read, and the command that checks each. "
                    if solved else "")
    lines = [TASKS_START, "## Your tasks: the TODO regions", "", textwrap.fill(
        in_this_copy +
        f"In the students' copy of the kit the core of Lab {number} is {regions} TODO regions in its two role "
        "files: each is a `# TODO:` comment that says what to write, and a `raise "
        "NotImplementedError(...)` with the TODO's first words. A role runs up to the first region "
        "it needs and stops there with a traceback that names it (a region that its loop reaches, a "
        "socket's handler say, is reported once, and the program carries on without it until Ctrl-C "
        "or Ctrl-X ends it). Do the tasks in order: each task's "
        "tests need its regions and those of the tasks before it, never a later one. One command "
        "checks a task (`make test` checks everything); a test of the task that fails names what it "
        "waited for.", width=100), ""]
    for task in tasks:
        functions = sorted(function for function, entry in manifest.items() if entry.get("task") == task.name)
        points = sum(manifest[function]["points"] for function in functions)
        lines += [f"### Task {task.number}: {task.title}", "",
                  f"Check it: `{TASK_COMMAND.format(name=task.name)}` ({len(functions)} tests, {points:g} points)", ""]
        if task.regions:
            lines.append("Its TODO regions:")
            lines += [f"- `{path}`: `{function}`" for path, _, function in
                      (region.partition("::") for region in task.regions)]
        else:
            lines.append("No region of its own: what tasks before it wrote, checked under attack.")
        lines += ["", "| test | file | points |", "|---|---|---:|"]
        for function in functions:
            path, _, name = function.partition("::")
            lines.append(f"| `{name}` | `{path}` | {manifest[function]['points']:g} |")
        lines.append("")
    lines += [textwrap.fill("A parametrized test shares its points among its cases. Windows Python: "
                            "`.venv\\Scripts\\python` for `.venv/bin/python`.", width=100), TASKS_END]
    return "\n".join(lines)


def with_tasks(handout: str, text: str) -> str:
    """The handout with its tasks section replaced (it must have the markers)."""
    before, found, rest = handout.partition(TASKS_START)
    _old, end, after = rest.partition(TASKS_END)
    if not found or not end:
        raise ValueError(f"the handout has no {TASKS_START!r} ... {TASKS_END!r} to write its tasks into")
    return before + text + after


def handout_from_manifest(handout: str, manifest: dict[str, dict], lab: str, solved: bool = False) -> str:
    """The handout with every part the manifest writes (its tasks, its rubric) written anew."""
    return with_rubric(with_tasks(handout, tasks_section(manifest, lab, solved)), rubric(manifest, lab))


def write_manifest() -> int:
    """Collect the whole suite into tests/expected_tests.json, then rewrite the
    rubric at the end of each handout from it."""
    manifest_file = KIT_ROOT / MANIFEST_NAME
    code = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider", f"--rootdir={KIT_ROOT}",
                        f"--write-manifest={manifest_file}", str(KIT_ROOT / "tests")])
    if code != pytest.ExitCode.OK:
        return int(code)
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))["tests"]
    for lab, handout in HANDOUTS.items():
        path = KIT_ROOT / handout
        path.write_text(handout_from_manifest(path.read_text(encoding="utf-8"), manifest, lab), encoding="utf-8")
    print(f"wrote {MANIFEST_NAME} ({len(manifest)} tests) and the rubrics of {', '.join(HANDOUTS.values())}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The grader's manifest of tests (docs/grading.md).")
    parser.add_argument("--write-manifest", action="store_true", required=True,
                        help=f"collect the suite into {MANIFEST_NAME} and rewrite the handouts' rubrics")
    parser.parse_args()
    sys.exit(write_manifest())
