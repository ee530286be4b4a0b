"""The grader catches each bug with the test named for it.

For every mutant of tests/mutants.py: patch the current role file, grade the
patched copy with ``pytest --role MODULE=COPY -k TEST``, and read the report
(``--grade-json``): the named test, and only it, must fail. A grader reading
"test_dm_reaches_only_its_recipient failed" then knows what the program does
wrong, instead of losing the points somewhere else under another name.

The mutants run in subprocesses a few at a time, since most of them spend
their run waiting for a deadline the broken program never meets.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

try:
    import fcntl
except ImportError:   # Windows
    fcntl = None
    import msvcrt

from tests.mutants import MUTANTS, ROOT, Mutant, StaleMutant, mutate
from tests.procs import ROLE_OVERRIDES_VARIABLE, run_nested

PARALLEL_RUNS = 12
MUTANT_DEADLINE_SECONDS = 120     # per mutant run: the named test's own deadline is within it


def run_mutant(mutant: Mutant, folder) -> dict:
    """Grade the mutated role file with the named test only; return the report."""
    copy = folder / mutant.role_file.name
    copy.write_text(mutate(mutant, mutant.role_file.read_text(encoding="utf-8")), encoding="utf-8")
    report = folder / "grades.json"
    test_file, _, test_name = mutant.caught_by.partition("::")
    env = {key: value for key, value in os.environ.items() if key != ROLE_OVERRIDES_VARIABLE}
    completed = run_nested(
        [sys.executable, "-m", "pytest", test_file, "-k", test_name, "--role", f"{mutant.role}={copy}",
         "--grade-json", str(report), "-p", "no:cacheprovider", "-q", "--test-deadline", "90",
         "-x",   # caught once one case fails: the test's other cases need not run (nor wait out their deadlines)
         "-p", "no:hypothesispytest",   # the black-box tests use none of it: a second of CPU saved a run
         # What is read is which tests failed, not why: pytest need not rewrite the asserts of the test
         # file and the kit's plugins to explain a failure (0.08 CPU s a run, where no bytecode is kept).
         "--assert=plain"],
        timeout=MUTANT_DEADLINE_SECONDS, cwd=ROOT, env=env)
    if not report.exists():
        raise AssertionError(f"no report from the run of mutant {mutant.name!r}:\n"
                             f"{completed.stdout}\n{completed.stderr}")
    return json.loads(report.read_text(encoding="utf-8"))


# Under pytest-xdist (make test), every worker that runs a mutant's test has
# this session fixture: the first to take the run's lock runs all the mutants,
# holding the lock until each report is in the run's shared folder; the others
# wait on the lock (the operating system wakes them when it is released, or
# when that worker dies), then read their reports. So each mutant runs once,
# whichever workers its test lands on.
SHARED_REPORT_DEADLINE_SECONDS = 600


class SharedLock:
    """A lock file of the run, held by the worker that runs the mutants."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a+b")   # open until the mutants are done: closing it releases the lock
        self.free = False   # released by its holder: the reports are all written

    def try_exclusive(self) -> bool:
        try:
            _lock(self.file, exclusive=True, blocking=False)
        except BlockingIOError:
            return False
        return True

    def wait_shared(self, seconds: float) -> None:
        """Block until the holder releases it, in a thread: a lock call has no timeout of its own."""
        if self.free:
            return
        taken = threading.Event()

        def take() -> None:
            _lock(self.file, exclusive=False, blocking=True)
            taken.set()

        threading.Thread(target=take, daemon=True).start()
        if not taken.wait(seconds):
            raise AssertionError("the worker running the mutants still holds their lock after "
                                 f"{seconds:g} s")
        self.release()   # not kept: on Windows a lock has no shared mode, and another worker waits on it too

    def release(self) -> None:
        self.file.close()   # closing the file releases its lock
        self.free = True


def _lock(file, exclusive: bool, blocking: bool) -> None:
    if fcntl is not None:
        fcntl.flock(file.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB))
        return
    # Windows: msvcrt locks a byte range, with no shared mode; a blocking call gives up after
    # 10 s with OSError, so it is asked again (the wait itself is the operating system's).
    while True:
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            return
        except OSError:
            if not blocking:
                raise BlockingIOError from None


class SharedReport:
    """A mutant's report that another worker wrote, once the run's lock is free."""

    def __init__(self, path: Path, lock: SharedLock) -> None:
        self.path, self.lock = path, lock

    def result(self) -> dict:
        self.lock.wait_shared(SHARED_REPORT_DEADLINE_SECONDS)
        if not self.path.exists():
            raise AssertionError(f"no report at {self.path}: the worker running the mutants ended without writing it")
        written = json.loads(self.path.read_text(encoding="utf-8"))
        if "error" in written:
            raise AssertionError(written["error"])
        return written["report"]


def share(future: Future, path: Path, shared: threading.Event) -> None:
    """Write a finished run's report (or why there is none) where the other workers look;
    then set ``shared``."""
    try:
        error = future.exception()
        written = {"error": str(error)} if error else {"report": future.result()}
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(written), encoding="utf-8")
        os.replace(partial, path)      # whole or not at all, for a reader in another process
    finally:
        shared.set()


@pytest.fixture(scope="session")
def mutant_reports(request, tmp_path_factory) -> dict[str, Future | SharedReport]:
    """Start the run of every selected mutant at once, a few in parallel."""
    selected = [item.callspec.params["mutant"] for item in request.session.items
                if item.originalname == "test_each_mutant_fails_the_test_named_for_it"]
    shared = None
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = tmp_path_factory.getbasetemp().parent   # the run's, above each worker's
        shared, lock = run_folder / "mutant-reports", SharedLock(run_folder / "mutant-reports.lock")
        taken = lock.try_exclusive()
        if not taken or shared.exists():   # another worker runs them, or has run them
            if taken:
                lock.release()
            yield {mutant.name: SharedReport(shared / f"{mutant.name}.json", lock) for mutant in selected}
            lock.release()
            return
        shared.mkdir()
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        futures = {mutant.name: pool.submit(run_mutant, mutant, tmp_path_factory.mktemp("mutant"))
                   for mutant in selected}
        if shared is not None:
            written = {name: threading.Event() for name in futures}
            for name, future in futures.items():
                future.add_done_callback(lambda done, name=name: share(done, shared / f"{name}.json", written[name]))
            # Every report written: the lock goes, and the waiting workers read theirs. (Not once
            # every run is done: a future counts as done before its callbacks have run.)
            threading.Thread(target=lambda: ([event.wait() for event in written.values()], lock.release()),
                             daemon=True).start()
        yield futures


@pytest.mark.network
@pytest.mark.points(4)
@pytest.mark.deadline(600)
@pytest.mark.parametrize("mutant", MUTANTS, ids=[mutant.name.replace(" ", "-") for mutant in MUTANTS])
def test_each_mutant_fails_the_test_named_for_it(mutant, mutant_reports):
    report = mutant_reports[mutant.name].result()
    function = mutant.caught_by
    ran = {nodeid: result for nodeid, result in report["tests"].items() if nodeid.split("[")[0] == function}
    assert ran, f"{function} did not run against mutant {mutant.name!r}: {report['tests']}"
    failed = {nodeid for nodeid, result in report["tests"].items() if result["outcome"] == "failed"}
    assert failed, f"{function} passes although the program {mutant.bug} (mutant {mutant.name!r})"
    assert {nodeid.split("[")[0] for nodeid in failed} == {function}, report["tests"]


@pytest.mark.points(1)
def test_a_mutant_whose_anchor_is_gone_is_reported_as_stale_by_name():
    mutant = MUTANTS[0]
    source = mutant.role_file.read_text(encoding="utf-8")
    assert mutant.anchor not in mutate(mutant, source)   # applies once to the current file
    stale = dataclasses.replace(mutant, anchor="text no role file holds")
    with pytest.raises(StaleMutant, match=rf"mutant '{mutant.name}' is stale: .*occurs 0 times in lab2_udp/client\.py"):
        mutate(stale, source)
    with pytest.raises(StaleMutant, match="occurs 2 times"):
        mutate(mutant, source + mutant.anchor)


@pytest.mark.points(1)
def test_every_mutant_applies_to_the_current_role_files_and_still_compiles():
    for mutant in MUTANTS:
        mutated = mutate(mutant, mutant.role_file.read_text(encoding="utf-8"))
        compile(mutated, str(mutant.role_file), "exec")
        assert mutant.caught_by.split("::")[1] in (ROOT / mutant.caught_by.split("::")[0]).read_text(
            encoding="utf-8"), f"mutant {mutant.name!r} names a test that does not exist"
