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
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mutants import MUTANTS, ROOT, Mutant, StaleMutant, mutate
from tests.procs import ROLE_OVERRIDES_VARIABLE

PARALLEL_RUNS = 12
MUTANT_DEADLINE_SECONDS = 120     # per mutant run: the named test's own deadline is within it


def run_mutant(mutant: Mutant, folder) -> dict:
    """Grade the mutated role file with the named test only; return the report."""
    copy = folder / mutant.role_file.name
    copy.write_text(mutate(mutant, mutant.role_file.read_text(encoding="utf-8")), encoding="utf-8")
    report = folder / "grades.json"
    test_file, _, test_name = mutant.caught_by.partition("::")
    env = {key: value for key, value in os.environ.items() if key != ROLE_OVERRIDES_VARIABLE}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", test_file, "-k", test_name, "--role", f"{mutant.role}={copy}",
         "--grade-json", str(report), "-p", "no:cacheprovider", "-q", "--test-deadline", "90",
         "-p", "no:hypothesispytest"],   # the black-box tests use none of it: a second of CPU saved a run
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=MUTANT_DEADLINE_SECONDS)
    if not report.exists():
        raise AssertionError(f"no report from the run of mutant {mutant.name!r}:\n"
                             f"{completed.stdout}\n{completed.stderr}")
    return json.loads(report.read_text(encoding="utf-8"))


# Under pytest-xdist (make test), every worker that runs a mutant's test has
# this session fixture: the first to create the run's shared folder runs all
# the mutants and leaves each report there; the others read them. So each
# mutant runs once, whichever workers its test lands on.
REPORT_POLL_SECONDS = 0.2
SHARED_REPORT_DEADLINE_SECONDS = 600


class SharedReport:
    """A mutant's report that another worker writes: result() waits for its file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def result(self) -> dict:
        deadline = time.monotonic() + SHARED_REPORT_DEADLINE_SECONDS
        while not self.path.exists():    # a file gives no signal: look again, until the deadline
            if time.monotonic() > deadline:
                raise AssertionError(f"no report at {self.path}: the worker running the mutants did not write it")
            time.sleep(REPORT_POLL_SECONDS)
        written = json.loads(self.path.read_text(encoding="utf-8"))
        if "error" in written:
            raise AssertionError(written["error"])
        return written["report"]


def share(future: Future, path: Path) -> None:
    """Write a finished run's report (or why there is none) where the other workers look."""
    error = future.exception()
    written = {"error": str(error)} if error else {"report": future.result()}
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(written), encoding="utf-8")
    os.replace(partial, path)      # whole or not at all, for a reader in another process


@pytest.fixture(scope="session")
def mutant_reports(request, tmp_path_factory) -> dict[str, Future | SharedReport]:
    """Start the run of every selected mutant at once, a few in parallel."""
    selected = [item.callspec.params["mutant"] for item in request.session.items
                if item.originalname == "test_each_mutant_fails_the_test_named_for_it"]
    shared = None
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "mutant-reports"   # the run's, above each worker's
        try:
            shared.mkdir()
        except FileExistsError:     # another worker runs them
            yield {mutant.name: SharedReport(shared / f"{mutant.name}.json") for mutant in selected}
            return
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        futures = {mutant.name: pool.submit(run_mutant, mutant, tmp_path_factory.mktemp("mutant"))
                   for mutant in selected}
        if shared is not None:
            for name, future in futures.items():
                future.add_done_callback(lambda done, name=name: share(done, shared / f"{name}.json"))
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
