"""make starter: the students' copy of the kit, each solution region a TODO.

Unit tests of the cut on small texts (tools/starter.py), then the kit's own
starter: nothing of the markers or of the solution's regions in it, every
file compiles, every role still answers --help, and graded by the kit's
tests it earns some points but not all, while the solution earns all.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.procs import ROLE_OVERRIDES_VARIABLE, run_nested
from tools.starter import (
    BEGIN, END, LEFT_OUT_PATHS, MARKDOWN_BEGIN, MARKDOWN_END, MARKER_TEXTS, PROMPT, MarkerError, Region,
    find_regions, lab_cut, main, region_function, starter_markdown, starter_python, write_starter,
)

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("lab1_tcp.server", "lab1_tcp.client", "lab2_udp.server", "lab2_udp.client")


def role_file(module: str) -> Path:
    return Path(module.replace(".", "/") + ".py")


def marked(body: str) -> str:
    """Fixture text with BEGIN, PROMPT and END standing for the markers (so
    that this file, too, spells none of them)."""
    return body.replace("BEGIN", BEGIN).replace("PROMPT", PROMPT).replace("END", END)


SOURCE = marked('''\
import socket


def receive(sock: socket.socket) -> bytes:
    """What arrived."""
    BEGIN
    PROMPT read what arrived; an empty read means the peer closed
    data = sock.recv(4096)
    return data
    END


class Server:
    def on_tick(self) -> None:
        for peer in self.peers:
            BEGIN
            PROMPT drop each peer that is late: its deadline has passed.
            PROMPT A closed socket is not read again.
            if peer.late:
                self.drop(peer)
            END
        self.flush()
''')


# --- The cut, on small texts ---------------------------------------------------------------

@pytest.mark.points(1)
def test_a_region_becomes_its_prompt_as_a_todo_and_a_not_implemented_error_at_its_indentation():
    starter = starter_python(SOURCE, "x.py")
    assert '''\
def receive(sock: socket.socket) -> bytes:
    """What arrived."""
    # TODO: read what arrived; an empty read means the peer closed
    raise NotImplementedError("read what arrived")


class Server:''' in starter
    assert '''\
        for peer in self.peers:
            # TODO: drop each peer that is late: its deadline has passed.
            #       A closed socket is not read again.
            raise NotImplementedError("drop each peer that is late")
        self.flush()
''' in starter
    compile(starter, "x.py", "exec")


@pytest.mark.points(1)
def test_no_marker_and_no_line_of_a_region_reaches_the_starter():
    starter = starter_python(SOURCE, "x.py")
    assert not [marker for marker in MARKER_TEXTS if marker in starter]
    for line in ("data = sock.recv(4096)", "return data", "if peer.late:", "self.drop(peer)"):
        assert line in SOURCE and line not in starter
    assert starter.count("\n") == SOURCE.count("\n") - 6   # 11 lines of two regions became 5


@pytest.mark.points(1)
def test_regions_are_found_with_their_prompt_and_code():
    first, second = find_regions(SOURCE)
    assert (first.begin, first.end, first.indent) == (6, 10, "    ")
    assert first.code == ("    data = sock.recv(4096)", "    return data")
    assert second.prompt == ("drop each peer that is late: its deadline has passed.",
                             "A closed socket is not read again.")
    assert second.short_prompt == "drop each peer that is late"
    assert Region(1, 3, "", ("read each datagram (at most 64); then stop",), ()).short_prompt == "read each datagram"
    assert Region(1, 3, "", ("send each one, a broadcast to the room,", "a write to the writer"), ()).short_prompt \
        == "send each one, a broadcast to the room"


@pytest.mark.points(1)
def test_a_region_is_named_by_its_function_and_a_cut_keeps_the_others_solved():
    first, second = find_regions(SOURCE)
    assert (region_function(SOURCE, first), region_function(SOURCE, second)) == ("receive", "Server.on_tick")
    starter = starter_python(SOURCE, "x.py", cut=lambda path, function: function == "Server.on_tick")
    assert "    data = sock.recv(4096)\n    return data\n" in starter and "drop each peer that is late" in starter
    assert not [marker for marker in MARKER_TEXTS if marker in starter] and "self.drop(peer)" not in starter


@pytest.mark.points(1)
def test_a_file_without_regions_is_copied_unchanged():
    text = "def f():\n    return 1\n"
    assert starter_python(text) == text


BAD_MARKERS = {
    "unmatched end": ("def f():\n    return 1\n    END\n", "x.py:3: unmatched"),
    "unmatched begin": ("def f():\n    BEGIN\n    PROMPT write f\n    return 1\n", "x.py:2: unmatched"),
    "no prompt": ("def f():\n    BEGIN\n    return 1\n    END\n", "x.py:2: the region has no"),
    "empty prompt": ("def f():\n    BEGIN\n    PROMPT\n    return 1\n    END\n", "x.py:3: an empty prompt"),
    "prompt after code": ("def f():\n    BEGIN\n    PROMPT a\n    x = 1\n    PROMPT b\n    return x\n    END\n",
                          "x.py:5: .* belongs right after"),
    "prompt outside a region": ("def f():\n    PROMPT write f\n    return 1\n", "x.py:2: .* belongs right after"),
    "nested": ("def f():\n    BEGIN\n    PROMPT a\n    if x:\n        BEGIN\n        PROMPT b\n        return 1\n"
               "        END\n    END\n", "x.py:5: nested region: .* opened at line 2"),
    "end deeper than begin": ("def f():\n    BEGIN\n    PROMPT a\n    return 1\n        END\n",
                              "x.py:5: inconsistent indentation"),
    "prompt shallower than begin": ("def f():\n    BEGIN\nPROMPT a\n    return 1\n    END\n",
                                    "x.py:3: inconsistent indentation"),
    "code shallower than the markers": ("def f():\n    if x:\n        BEGIN\n        PROMPT a\n        y = 1\n"
                                        "    return 2\n        END\n", "x.py:6: inconsistent indentation"),
    "marker text in a string": ('TEXT = "BEGIN"\n', "x.py:1: marker text that is not a marker line"),
    "half a statement": ("def f(x):\n    BEGIN\n    PROMPT a\n    if x:\n        return 1\n    END\n"
                         "    else:\n        return 2\n", "x.py:2: the starter does not compile"),
}


@pytest.mark.points(2)
@pytest.mark.parametrize("case", BAD_MARKERS, ids=[case.replace(" ", "-") for case in BAD_MARKERS])
def test_misplaced_markers_are_refused_naming_the_file_and_line(case):
    text, message = BAD_MARKERS[case]
    with pytest.raises(MarkerError, match=message):
        starter_python(marked(text), "x.py")


@pytest.mark.points(1)
def test_instructor_notes_in_markdown_are_left_out_and_stray_markers_refused():
    text = f"# Guide\n\nFor all.\n{MARKDOWN_BEGIN}\nHow the starter is made.\n{MARKDOWN_END}\nThe end.\n"
    assert starter_markdown(text, "doc.md") == "# Guide\n\nFor all.\nThe end.\n"
    with pytest.raises(MarkerError, match="doc.md:2: unmatched"):
        starter_markdown(f"a\n{MARKDOWN_BEGIN}\nb\n", "doc.md")
    with pytest.raises(MarkerError, match="doc.md:1: marker text that is not a marker line"):
        starter_markdown(f"the line {BEGIN} opens a region\n", "doc.md")


@pytest.mark.points(1)
def test_the_starter_leaves_out_secrets_caches_and_the_default_starter_folder(tmp_path):
    kit, out = tmp_path / "kit", tmp_path / "kit" / "fresh"
    files = {"lab/role.py": SOURCE, "docs/guide.md": f"a\n{MARKDOWN_BEGIN}\nb\n{MARKDOWN_END}\n",
             ".env": "SERVER_PRIVATE_KEY=00\n", "accounts.db": "", ".git/config": "", "lab/__pycache__/r.pyc": "",
             ".venv/bin/python": "", "autograder.zip": "", "starter/old.py": "", "tests/test_starter.py": "",
             "Makefile": "test:\n"}
    for name, text in files.items():
        (kit / name).parent.mkdir(parents=True, exist_ok=True)
        (kit / name).write_text(text, encoding="utf-8")
    (kit / "docs/picture.png").write_bytes(b"\x89PNG\xff\xfe")
    (kit / "tools.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    (kit / "tools.sh").chmod(0o755)
    assert write_starter(out, kit) == {"lab/role.py": 2}
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file())
    assert written == ["Makefile", "docs/guide.md", "docs/picture.png", "lab/role.py", "tools.sh"]
    assert (out / "docs/guide.md").read_text(encoding="utf-8") == "a\n"
    assert (out / "docs/picture.png").read_bytes() == b"\x89PNG\xff\xfe"
    assert os.access(out / "tools.sh", os.X_OK)


@pytest.mark.points(1)
def test_in_a_git_checkout_only_what_git_tracks_goes_into_the_starter(tmp_path):
    kit = tmp_path / "kit"
    for name in ("lab/role.py", "submissions/alice/client.py", "notes.txt"):
        (kit / name).parent.mkdir(parents=True, exist_ok=True)
        (kit / name).write_text(SOURCE, encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=kit, check=True)
    subprocess.run(["git", "add", "lab/role.py"], cwd=kit, check=True)
    assert write_starter(tmp_path / "out", kit) == {"lab/role.py": 2}
    assert [path.name for path in (tmp_path / "out").rglob("*") if path.is_file()] == ["role.py"]


@pytest.mark.points(1)
def test_a_bad_marker_writes_nothing(tmp_path):
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "a.py").write_text("x = 1\n", encoding="utf-8")
    (kit / "b.py").write_text(marked("def f():\n    BEGIN\n    return 1\n    END\n"), encoding="utf-8")
    with pytest.raises(MarkerError, match="b.py:2"):
        write_starter(tmp_path / "out", kit)
    assert not (tmp_path / "out").exists()


@pytest.mark.points(1)
def test_a_bad_marker_keeps_the_previous_starter(tmp_path, monkeypatch, capsys):
    kit, out = tmp_path / "kit", tmp_path / "out"
    (kit / "lab1_tcp").mkdir(parents=True)
    (kit / "lab1_tcp" / "server.py").write_text(marked("def f():\n    END\n"), encoding="utf-8")
    (out / "lab1_tcp").mkdir(parents=True)
    (out / "lab1_tcp" / "server.py").write_text("handed out last week\n", encoding="utf-8")
    monkeypatch.setattr("tools.starter.ROOT", kit)
    assert main([str(out), "--replace"]) == 1
    assert "lab1_tcp/server.py:2: unmatched" in capsys.readouterr().err
    assert (out / "lab1_tcp" / "server.py").read_text(encoding="utf-8") == "handed out last week\n"


@pytest.mark.points(1)
def test_replace_takes_only_a_previous_starter(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(out)]) == 0
    with pytest.raises(SystemExit, match="not empty"):
        main([str(out)])
    (out / "lab1_tcp" / "server.py").write_text("stale\n", encoding="utf-8")
    assert main([str(out), "--replace"]) == 0
    assert (out / "lab1_tcp" / "server.py").read_text(encoding="utf-8") != "stale\n"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="does not look like a previous starter"):
        main([str(other), "--replace"])
    assert (other / "mine.txt").read_text(encoding="utf-8") == "keep me\n"
    assert "starter written to" in capsys.readouterr().out


# --- The kit's own starter ---------------------------------------------------------------

@pytest.fixture(scope="module")
def kit_starter(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kit") / "starter"
    write_starter(out)
    return out


@pytest.mark.points(1)
@pytest.mark.parametrize("module", ROLES)
def test_each_role_file_gives_the_student_two_to_four_regions_and_no_line_of_them(kit_starter, module):
    solution = (ROOT / role_file(module)).read_text(encoding="utf-8")
    regions = find_regions(solution, str(role_file(module)))
    assert 2 <= len(regions) <= 4, [region.prompt[0] for region in regions]
    starter = (kit_starter / role_file(module)).read_text(encoding="utf-8")
    assert starter.count("raise NotImplementedError(") - solution.count("raise NotImplementedError(") == len(regions)
    starter_lines = {line.strip() for line in starter.splitlines()}
    solution_lines = [line.strip() for line in solution.splitlines()]
    for region in regions:
        # A line found only in the region, in the solution, is the solution's: the student writes it.
        own = [line.strip() for line in region.code if line.strip() and solution_lines.count(line.strip()) == 1]
        assert own, f"region at line {region.begin} has no line of its own"
        assert not starter_lines & set(own), f"region at line {region.begin} reaches the starter"


@pytest.mark.points(1)
def test_the_kit_starter_holds_no_marker_text_and_every_python_file_compiles(kit_starter):
    files = [path for path in kit_starter.rglob("*") if path.is_file()]
    assert {"lab1_tcp/server.py", "common/session.py", "tests/test_lab1.py", "Makefile"} <= {
        path.relative_to(kit_starter).as_posix() for path in files}
    assert not (kit_starter / ".env").exists() and not (kit_starter / ".venv").exists()
    for path in files:
        if path.suffix == ".png":
            continue
        text = path.read_text(encoding="utf-8")
        assert not [marker for marker in MARKER_TEXTS if marker in text], path
        if path.suffix == ".py":
            compile(text, str(path), "exec")


@pytest.mark.points(1)
def test_the_starter_manifest_lists_every_test_it_holds_and_no_other(kit_starter):
    kit = json.loads((ROOT / "tests/expected_tests.json").read_text(encoding="utf-8"))["tests"]
    starter = json.loads((kit_starter / "tests/expected_tests.json").read_text(encoding="utf-8"))["tests"]
    assert any(function.startswith("tests/test_starter.py::") for function in kit)
    assert starter == {function: entry for function, entry in kit.items()
                       if function.partition("::")[0] not in LEFT_OUT_PATHS}
    assert not (kit_starter / "tests/mutants.py").exists() and (kit_starter / "tests/test_lab1.py").exists()
    assert {function.partition("::")[0] for function in starter} == {
        path.relative_to(kit_starter).as_posix() for path in (kit_starter / "tests").glob("test_*.py")}


@pytest.mark.points(1)
def test_a_starter_that_is_no_git_checkout_yet_builds_its_autograder_without_keys_or_caches(kit_starter, tmp_path):
    (kit_starter / "mine.env").write_text("SERVER_PRIVATE_KEY=secret\n", encoding="utf-8")   # a student's own
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-m", "tools.autograder.build", str(tmp_path / "autograder.zip")],
                               cwd=kit_starter, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    with zipfile.ZipFile(tmp_path / "autograder.zip") as archive:
        names = set(archive.namelist())
    assert {"run_autograder", "lab1_tcp/client.py", "tests/test_lab1.py", ".env.example"} <= names, sorted(names)
    assert not [name for name in names if name.endswith((".env", ".pyc")) or "__pycache__" in name], sorted(names)


@pytest.mark.points(1)
@pytest.mark.parametrize("module", ROLES)
def test_each_role_of_the_starter_still_answers_help(kit_starter, module):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", ROLE_OVERRIDES_VARIABLE)}
    # The starter's own module runs, not the kit's: the folder a program starts in comes first on sys.path.
    where = subprocess.run([sys.executable, "-c", f"import {module} as role; print(role.__file__)"],
                           cwd=kit_starter, env=env, capture_output=True, text=True, timeout=60)
    assert Path(where.stdout.strip()) == kit_starter / role_file(module), where.stderr
    completed = subprocess.run([sys.executable, "-m", module, "--help"], cwd=kit_starter, env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert f"usage: python -m {module}" in completed.stdout


# The black-box tests the starter is graded by: the role files' length, each
# Lab 1 role's command line, and conversations that run through the regions.
SCORED_LAB1 = ("help_explains_every_option", "mistyped_port", "parse_args_reads", "delivered_both_ways_verbatim")
SCORED_LAB2 = ("own_message_appears_only_when_numbered", "dm_reaches_only_its_recipient")


def grade(roles_from: Path, tmp_path: Path, name: str, selection: str) -> dict:
    """Run the tests -k ``selection`` selects with every role taken from
    ``roles_from``; return the --grade-json report."""
    report = tmp_path / f"{name}.json"
    roles = [argument for module in ROLES for argument in ("--role", f"{module}={roles_from / role_file(module)}")]
    env = {key: value for key, value in os.environ.items() if key != ROLE_OVERRIDES_VARIABLE}
    # Only the files that hold a selected test (the manifest says where each is): reading every
    # test file costs the run seconds of CPU.
    manifest = json.loads((ROOT / "tests/expected_tests.json").read_text(encoding="utf-8"))["tests"]
    words = selection.split(" or ")
    files = sorted({function.split("::")[0] for function in manifest
                    if any(word in function.split("::")[1] for word in words)})
    completed = run_nested(
        [sys.executable, "-m", "pytest", *files, "-k", selection, *roles, "--grade-json", str(report),
         "-p", "no:cacheprovider", "-q", "--test-deadline", "90",
         "-p", "no:hypothesispytest"],   # the black-box tests use none of it: a second of CPU saved a run
        timeout=600, cwd=ROOT, env=env)
    assert report.exists(), f"no report from grading {name}:\n{completed.stdout}\n{completed.stderr}"
    return json.loads(report.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def lab1_done_starter(tmp_path_factory) -> Path:
    """A starter for Lab 2 (make starter LAB=2): Lab 1's regions as the solution has them."""
    out = tmp_path_factory.mktemp("lab2") / "starter"
    assert lab_cut(1) is None   # Lab 1's starter cuts both labs: a solved Lab 2 would answer Lab 1
    assert write_starter(out, cut=lab_cut(2)) == {"lab2_udp/client.py": 4, "lab2_udp/server.py": 3}
    return out


@pytest.mark.network
@pytest.mark.points(3)
@pytest.mark.deadline(900)
def test_the_starter_earns_some_points_but_not_all_and_with_lab1_filled_in_all_of_lab1(
        kit_starter, lab1_done_starter, tmp_path):
    manifest = json.loads((ROOT / "tests/expected_tests.json").read_text(encoding="utf-8"))["tests"]
    lab1 = {function.split("::")[1] for function, entry in manifest.items() if entry["category"] == "lab1"}
    # Lab 1's regions filled in from the solution: all of Lab 1, none of Lab 2.
    filled = grade(lab1_done_starter, tmp_path, "lab1-done", " or ".join(sorted(lab1) + list(SCORED_LAB2)))
    assert not filled["missing"] and filled["categories"]["lab2"]["earned"] == 0, filled["categories"]
    lab1_results = {nodeid: result for nodeid, result in filled["tests"].items()
                    if nodeid.split("[")[0] in manifest and manifest[nodeid.split("[")[0]]["category"] == "lab1"}
    assert {nodeid.split("::")[1].split("[")[0] for nodeid in lab1_results} == lab1
    # Lab 1 in full: every test passes, but for one this machine cannot run (a skip says why).
    assert all(result["outcome"] in ("passed", "skipped") for result in lab1_results.values()), {
        nodeid: result for nodeid, result in lab1_results.items() if result["outcome"] != "passed"}
    assert sum(result["outcome"] == "passed" for result in lab1_results.values()) > 0.9 * len(lab1_results)

    selection = " or ".join(("role_file", *SCORED_LAB1, *SCORED_LAB2))
    starter = grade(kit_starter, tmp_path, "starter", selection)
    assert 0 < starter["earned"] < starter["possible"] and not starter["missing"]
    passed = {nodeid.split("::")[-1] for nodeid, result in starter["tests"].items() if result["outcome"] == "passed"}
    failed = {nodeid.split("::")[-1] for nodeid, result in starter["tests"].items() if result["outcome"] == "failed"}
    # The student's program starts and reads its options; what the regions teach is missing.
    assert any(name.startswith("test_help_explains_every_option") for name in passed), passed
    assert {"test_messages_are_delivered_both_ways_verbatim", "test_dm_reaches_only_its_recipient",
            "test_own_message_appears_only_when_numbered_by_the_server"} <= failed, failed


@pytest.mark.points(1)
def test_a_starter_for_one_lab_cuts_only_that_labs_regions(lab1_done_starter):
    for module in ROLES:
        text = (lab1_done_starter / role_file(module)).read_text(encoding="utf-8")
        solution = (ROOT / role_file(module)).read_text(encoding="utf-8")
        if module.startswith("lab1"):   # solved: the solution's code, without the markers
            assert "NotImplementedError(" not in text and not [m for m in MARKER_TEXTS if m in text]
            assert [line for line in solution.splitlines() if not line.strip().startswith(
                (BEGIN, END, PROMPT))] == text.splitlines()
        else:
            assert text.count("raise NotImplementedError(") == len(find_regions(solution))
    # Its handouts say which lab is solved in this copy, and only that one.
    from tests.tasks import TASKS
    regions = sum(len(task.regions) for task in TASKS if task.lab == "lab1")
    assert f"In this copy of the kit Lab 1's {regions} regions are written already" in (
        lab1_done_starter / "docs/lab1.md").read_text(encoding="utf-8")
    assert "In this copy of the kit" not in (lab1_done_starter / "docs/lab2.md").read_text(encoding="utf-8")


@pytest.mark.points(1)
def test_the_starter_handouts_tasks_and_rubric_come_from_its_own_manifest(kit_starter):
    from tests.grading import HANDOUTS, handout_from_manifest
    manifest = json.loads((kit_starter / "tests/expected_tests.json").read_text(encoding="utf-8"))["tests"]
    for lab, handout in HANDOUTS.items():
        text = (kit_starter / handout).read_text(encoding="utf-8")
        assert text == handout_from_manifest(text, manifest, lab), handout
        assert "raise NotImplementedError" in text and "--grade-task" in text


@pytest.mark.points(1)
@pytest.mark.parametrize("module", ROLES)
def test_no_line_of_a_starter_role_follows_its_raise(kit_starter, module):
    """A statement after a TODO's raise would never run: dead code the student reads."""
    tree = ast.parse((kit_starter / role_file(module)).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if not isinstance(block, list):
                continue
            for position, statement in enumerate(block[:-1]):
                if isinstance(statement, ast.Raise) and "NotImplementedError" in ast.unparse(statement):
                    raise AssertionError(f"{role_file(module)}:{block[position + 1].lineno}: a line after "
                                         f"the raise at line {statement.lineno} never runs")


@pytest.mark.network
@pytest.mark.points(1)
def test_the_demo_in_the_starter_names_the_todo_it_stopped_at(kit_starter):
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", ROLE_OVERRIDES_VARIABLE)}
    completed = subprocess.run([sys.executable, "-m", "lab2_udp.demo"], cwd=kit_starter, capture_output=True,
                               text=True, timeout=120, env={**env, "DISPLAY": ""})
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "A TODO region is not written yet: " in completed.stderr, completed.stderr
    assert "The demo plays Lab 2's room: write Lab 2's regions" in completed.stderr, completed.stderr
