"""The kit's shape: files a student can read, a core without I/O, no outside data."""
import ast
from pathlib import Path

import pytest

from tests.procs import role_overrides
from tools.starter import is_marker_line

ROOT = Path(__file__).resolve().parents[1]
ROLE_FILES = ("lab1_tcp/server.py", "lab1_tcp/client.py", "lab2_udp/server.py", "lab2_udp/client.py")
MAX_ROLE_FILE_LINES = 350
SANS_IO_MODULES = ("accounts", "admission", "config", "errors", "framing", "messages", "noise", "room", "session",
                   "transcript")


@pytest.mark.points(1)
@pytest.mark.parametrize("role_file", ROLE_FILES)
def test_role_file_reads_in_at_most_350_lines(role_file):
    module = role_file.removesuffix(".py").replace("/", ".")
    path = role_overrides().get(module, ROOT / role_file)   # a student's copy, when grading one
    # The marker lines of make starter's regions are for the instructor: a student never reads them.
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not is_marker_line(line)]
    assert len(lines) <= MAX_ROLE_FILE_LINES


@pytest.mark.points(2)
@pytest.mark.parametrize("module", SANS_IO_MODULES)
def test_core_module_does_no_io_of_its_own(module):
    tree = ast.parse((ROOT / "common" / f"{module}.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"socket", "selectors", "tkinter"}
    assert not {"common.net", "common.ui"} & {node.module for node in ast.walk(tree)
                                              if isinstance(node, ast.ImportFrom)}


@pytest.mark.points(1)
def test_the_kit_reads_nothing_from_outside_its_own_folder():
    """A student's clone is all there is: no code, build or CI file may reach
    into a folder beside it (the Noise vectors live in tests/data)."""
    files = [*ROOT.glob("*/*.py"), ROOT / "Makefile", *ROOT.glob(".ci/*")]
    for path in files:
        if path != Path(__file__).resolve():
            assert "../" not in path.read_text(encoding="utf-8"), path
