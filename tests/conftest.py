"""Shared pytest setup: the grading marker, the kit's import path, and the
order the test files run in."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# The tests run from a clone without installing anything extra: make the kit's
# packages (common, lab1_tcp, lab2_udp) importable from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.platforms", "tests.wire_story", "tests.grading"]

# Where PYTHONDONTWRITEBYTECODE is set (some machines and containers set it, to
# keep source folders clean), every process a test starts compiles every module
# it imports anew: a role's start then costs a third more CPU, and `make test`
# starts hundreds of them. The run keeps their bytecode in a temporary folder of
# its own instead (PYTHONPYCACHEPREFIX: nothing is written beside the sources),
# for every process it starts (pytest-xdist's workers, the roles, the nested
# pytest runs inherit it), and removes it at the end.
_BYTECODE_FOLDER: dict[pytest.Config, tuple[str, str]] = {}   # the folder, and the setting it replaced


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("hypothesispytest"):   # it has imported hypothesis already
        # Hypothesis fails an example that takes over 200 ms, and data that is slow to make: on a
        # busy 2-core machine both happen to correct code. The tests check results, never speed.
        from hypothesis import HealthCheck, settings
        settings.register_profile("kit", deadline=None, suppress_health_check=[HealthCheck.too_slow])
        settings.load_profile("kit")
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        folder = tempfile.mkdtemp(prefix="chat-lab-bytecode-")
        _BYTECODE_FOLDER[config] = folder, os.environ.pop("PYTHONDONTWRITEBYTECODE")
        os.environ["PYTHONPYCACHEPREFIX"] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _BYTECODE_FOLDER:
        folder, os.environ["PYTHONDONTWRITEBYTECODE"] = _BYTECODE_FOLDER.pop(config)
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        shutil.rmtree(folder, ignore_errors=True)


# The order the tests are handed out in. pytest-xdist gives each worker one
# test at a time (kit.py's --maxschedchunk 1), the next as soon as it is
# free, in this order: the longest first, so that the short ones fill in
# beside them and none is left running alone at the end.
# - RUN_FIRST: the longest tests outside test_lab1.py, as measured (57, 7, 25,
#   12, 10, 9, 8, 6, 5 and 5 seconds in one `make test` on a 2-core machine).
#   A worker gets two tests at its start: the longest is paired with a short
#   one. test_grading.py checks that each is a test of the suite.
# - then Lab 1's tests, in their order: on the starter, the first failure
#   names the first TODO;
# - then the other files, those of the longest tests first.
RUN_FIRST = (
    "test_starter.py::test_the_starter_earns_some_points_but_not_all_and_with_lab1_filled_in_all_of_lab1",
    "test_lab2.py::test_transcripts_match_through_a_lossy_network",
    "test_interop.py::test_interop_matrix_gives_a_good_pair_full_points_and_names_the_test_a_broken_client_fails",
    "test_grading.py::test_the_gradescope_autograder_gives_a_good_submission_full_marks_and_names_a_bug",
    "test_lab2_attacks.py::test_strangers_reopening_from_200_addresses_never_evict_a_client_that_proved_the_key",
    "test_lab2_attacks.py::test_members_that_stop_reading_are_dropped_without_freezing_the_room",
    "test_lab2_operator.py::test_a_silent_member_is_removed_after_the_idle_limit_and_one_that_keeps_alive_is_not",
    "test_lab2_hostile.py::test_a_login_flood_from_one_address_neither_queues_without_end_nor_keeps_members_waiting",
    "test_lab2_hostile.py::test_strangers_holding_idle_connections_do_not_lock_members_out",
    "test_grading.py::test_with_workers_in_parallel_the_report_is_the_same_each_test_counted_once",
)
FIRST_FILES = ("test_lab1.py", "test_starter.py", "test_mutants.py", "test_grading.py", "test_lab2.py",
               "test_interop.py", "test_quit_paths.py", "test_lab2_hostile.py", "test_lab2_attacks.py")
# The mutants' test: its first case starts every mutant's run, in the
# background on its worker (tests/test_mutants.py); the other cases, which
# read the runs' reports, go last, when the reports are written.
MUTANTS_TEST = "test_each_mutant_fails_the_test_named_for_it"


_COLLECTION_ORDER: dict[str, int] = {}   # node id -> its place in the run


def pytest_collection_modifyitems(items) -> None:
    first_mutant = next((item for item in items if item.originalname == MUTANTS_TEST), None)

    def rank(item) -> tuple[int, int]:
        test = f"{item.path.name}::{item.originalname}"
        if test in RUN_FIRST:
            return 0, RUN_FIRST.index(test)
        if item is first_mutant:
            return 0, len(RUN_FIRST)
        if item.originalname == MUTANTS_TEST:
            return 3, 0
        name = item.path.name
        return (1, FIRST_FILES.index(name)) if name in FIRST_FILES else (2, 0)

    items.sort(key=rank)   # stable: a file's tests keep their order
    if not os.environ.get("PYTEST_XDIST_WORKER"):   # a run without workers: its failures are put in order too
        _COLLECTION_ORDER.update((item.nodeid, index) for index, item in enumerate(items))


# pytest-xdist reports each failure when it happens, on whichever worker: the
# failures and their short summary are put in the files' order before they
# are printed (Lab 1's first, then the order above, each file's tests in the
# order they ran), so that the first one on the screen is Lab 1's.
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    if not _COLLECTION_ORDER:
        _COLLECTION_ORDER.update((nodeid, index) for index, nodeid in enumerate(ids))


def _shown_order(nodeid: str) -> tuple[int, int]:
    name = nodeid.split("::")[0].rpartition("/")[2]
    return (FIRST_FILES.index(name) if name in FIRST_FILES else len(FIRST_FILES),
            _COLLECTION_ORDER.get(nodeid, len(_COLLECTION_ORDER)))


def pytest_sessionfinish(session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not _COLLECTION_ORDER or reporter is None:
        return
    for outcome in ("failed", "error"):
        reporter.stats.get(outcome, []).sort(key=lambda report: _shown_order(getattr(report, "nodeid", "")))
