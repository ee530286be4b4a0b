"""The grading report: every test is worth the points of its marker.

    @pytest.mark.points(3)
    def test_dm_reaches_only_its_recipient(...): ...

At the end of every run pytest prints the points earned per test file and in
all; ``--grade-json FILE`` also writes them, test by test, for a gradebook.
``--role lab2_udp.client=PATH`` grades a student's copy of a role file: the
black-box tests then start PATH wherever they would start that role.
A test without a marker is worth 1 point. A parametrized test is worth its
points once, shared among its cases. A skipped test earns nothing, and the
report says so, because a skip (no Xvfb, say) is not a pass.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

from tests.procs import ROLE_OVERRIDES_VARIABLE, role_overrides

_RESULTS_KEY = pytest.StashKey[dict]()


ROLES = ("lab1_tcp.server", "lab1_tcp.client", "lab2_udp.server", "lab2_udp.client")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--grade-json", metavar="FILE", help="write the points of every test to FILE as JSON")
    parser.addoption("--role", action="append", default=[], metavar="MODULE=PATH",
                     help="grade the file PATH in place of a role, e.g. lab2_udp.client=alice/client.py")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS_KEY] = {}
    overrides = []
    for item in config.getoption("--role"):
        module, _, path = item.partition("=")
        if module not in ROLES or not os.path.isfile(path):
            raise pytest.UsageError(f"--role {item}: expected one of {', '.join(ROLES)}, '=', an existing file")
        overrides.append(f"{module}={os.path.abspath(path)}")
    if overrides:   # the black-box tests start role processes through tests/procs.py, which reads this
        os.environ[ROLE_OVERRIDES_VARIABLE] = ",".join(overrides)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("points")
    points = marker.args[0] if marker else 1
    results = item.config.stash[_RESULTS_KEY]
    # A test has failed if any phase (setup, call, teardown) failed; it has
    # passed only if its call passed and nothing else failed.
    previous = results.get(item.nodeid, {"points": points, "outcome": "passed"})
    if report.failed:
        previous["outcome"] = "failed"
    elif report.skipped and previous["outcome"] != "failed":
        previous["outcome"] = "skipped"
    results[item.nodeid] = previous


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results = config.stash[_RESULTS_KEY]
    if not results:
        return
    cases: dict[str, list[dict]] = defaultdict(list)      # test function -> its cases
    for nodeid, result in results.items():
        cases[nodeid.split("[")[0]].append(result)
    by_file: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])   # earned, possible, skipped
    for function, results_of_function in cases.items():
        row = by_file[function.split("::")[0]]
        points = results_of_function[0]["points"]
        share = points / len(results_of_function)
        row[0] += share * sum(r["outcome"] == "passed" for r in results_of_function)
        row[1] += points
        row[2] += share * sum(r["outcome"] == "skipped" for r in results_of_function)
    terminalreporter.section("grading")
    for module, path in role_overrides().items():
        terminalreporter.write_line(f"{module} graded from {path}")
    width = max(map(len, by_file))
    for path, (earned, possible, skipped) in sorted(by_file.items()):
        note = f"  ({skipped:g} skipped)" if skipped else ""
        terminalreporter.write_line(f"{path:<{width}}  {earned:>6.1f} / {possible:<4g}{note}")
    earned = sum(row[0] for row in by_file.values())
    possible = sum(row[1] for row in by_file.values())
    terminalreporter.write_line(f"{'total':<{width}}  {earned:>6.1f} / {possible:<4g}")
    path = config.getoption("--grade-json")
    if path:
        with open(path, "w", encoding="utf-8") as report:
            json.dump({"earned": round(earned, 2), "possible": possible, "tests": results}, report, indent=1)
