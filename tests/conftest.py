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
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        folder = tempfile.mkdtemp(prefix="chat-lab-bytecode-")
        _BYTECODE_FOLDER[config] = folder, os.environ.pop("PYTHONDONTWRITEBYTECODE")
        os.environ["PYTHONPYCACHEPREFIX"] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _BYTECODE_FOLDER:
        folder, os.environ["PYTHONDONTWRITEBYTECODE"] = _BYTECODE_FOLDER.pop(config)
        os.environ.pop("PYTHONPYCACHEPREFIX", None)
        shutil.rmtree(folder, ignore_errors=True)


# Lab 1's tests run first: on the starter, the first failure names the first
# TODO. Then the files that hold the longest tests, so that `make test`'s
# workers (pytest-xdist, which hands out tests in this order) do not end
# waiting on one of them; then the rest, in their usual order.
FIRST_FILES = ("test_lab1.py", "test_starter.py", "test_mutants.py", "test_grading.py", "test_lab2.py",
               "test_interop.py", "test_quit_paths.py", "test_lab2_hostile.py", "test_lab2_attacks.py")


def pytest_collection_modifyitems(items) -> None:
    def rank(item) -> int:
        name = item.path.name
        return FIRST_FILES.index(name) if name in FIRST_FILES else len(FIRST_FILES)

    items.sort(key=rank)   # stable: a file's tests keep their order


# pytest-xdist reports each failure when it happens, on whichever worker: the
# failures and their short summary are put back in the order above before
# they are printed, so that the first one on the screen is Lab 1's.
_COLLECTION_ORDER: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    if not _COLLECTION_ORDER:
        _COLLECTION_ORDER.update((nodeid, index) for index, nodeid in enumerate(ids))


def pytest_sessionfinish(session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not _COLLECTION_ORDER or reporter is None:
        return
    for outcome in ("failed", "error"):
        reporter.stats.get(outcome, []).sort(
            key=lambda report: _COLLECTION_ORDER.get(getattr(report, "nodeid", ""), len(_COLLECTION_ORDER)))
