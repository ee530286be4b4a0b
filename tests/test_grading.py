"""The grading report: points of passed tests, skips never counted as passes,
a deadline for every test, and the formats that autograding platforms read.

Each format is checked against rules written here from the platform's public
documentation (no network at test time):

- Gradescope, "Autograder Specifications", results.json: ``score``,
  ``execution_time``, ``output``, ``output_format``, ``extra_data`` (an
  object); ``tests[]`` with ``name``, ``number``, ``score``, ``max_score``,
  ``status`` ("passed" or "failed"), ``output``, ``tags`` (a list of strings)
  and ``visibility`` ("hidden", "after_due_date", "after_published" or
  "visible"); and "Leaderboards": ``leaderboard[]`` with ``name``, ``value``
  and an optional ``order`` ("asc" or "desc", the default).
- PrairieLearn, "External grading", results.json: ``gradable``, ``score`` from
  0 to 1, ``message``, ``output``; ``tests[]`` with ``name``, ``points``,
  ``max_points``, ``message``, ``output`` and optional ``images``, each with a
  ``label`` and a ``url``, a data URL ("data:image/png;base64,...").
- JUnit XML as CI systems read it (GitHub Actions reporters, Jenkins), valid
  under the xunit2 schema pytest publishes (``junit_family=xunit2``): a
  ``testsuite`` whose ``tests``, ``failures``, ``errors`` and ``skipped``
  count its ``testcase`` elements; ``properties`` on the suite only; a
  testcase has ``name``, ``classname`` and ``time`` and holds at most one
  ``failure``, ``error`` or ``skipped``.
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import pytest

from tests.procs import ROOT, run_nested

pytest_plugins = ["pytester"]

STUDENT_TESTS = '''
import pytest

@pytest.mark.points(3)
def test_passes(): pass

@pytest.mark.points(2)
def test_fails(): assert False, "the server never answered"

@pytest.mark.points(4)
def test_skips(): pytest.skip("no display")

@pytest.mark.points(2)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_half_of_the_cases_pass(n): assert n % 2

@pytest.mark.hidden
@pytest.mark.points(1)
def test_hidden_until_the_due_date(): pass
'''
GRADESCOPE_VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}
GRADESCOPE_OUTPUT_FORMATS = {"text", "html", "simple_format", "md", "ansi"}


@pytest.fixture
def student(pytester):
    """A folder with the kit's grading plugin and a student's tests."""
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(test_student=STUDENT_TESTS)
    return pytester


# The small suites these tests grade use no hypothesis: its plugin stays out of their runs. In
# a run in this process, pytester puts sys.modules back after each, so hypothesis (assertion-
# rewritten, as a plugin's package is) would be imported anew every time: a second of CPU a run.
NO_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def grade(pytester, *args: str):
    return pytester.runpytest(*NO_PLUGINS, *args)


@pytest.mark.points(2)
def test_grading_report_counts_passes_fails_skips_and_shares_parametrized_points(student):
    result = grade(student, "--grade-json", "grades.json")
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 0   # this test's own deadline is armed again
    result.stdout.fnmatch_lines(["*test_student.py*5.0 / 12*(4 skipped)*", "total*5.0 / 12*"])
    grades = json.loads((student.path / "grades.json").read_text())
    assert grades["earned"] == 5.0 and grades["possible"] == 12
    assert grades["tests"]["test_student.py::test_fails"] == {
        "points": 2, "outcome": "failed", "reason": "call: AssertionError: the server never answered"}
    assert grades["tests"]["test_student.py::test_skips"]["outcome"] == "skipped"
    assert grades["tests"]["test_student.py::test_passes"] == {"points": 3, "outcome": "passed"}
    assert grades["categories"] == {"tools": {"earned": 5.0, "possible": 12}} and grades["missing"] == []


@pytest.mark.points(1)
def test_the_report_lists_lab1_first_then_lab2_whatever_order_the_tests_ran_in():
    from tests.grading import _function_scores
    ran = {   # as the run's workers finished them: the longest first
        "tests/test_lab2.py::test_b": {"points": 2, "outcome": "passed", "hidden": False},
        "tests/test_tools.py::test_c": {"points": 1, "outcome": "passed", "hidden": False},
        "tests/test_lab1.py::test_z[x]": {"points": 1, "outcome": "failed", "hidden": False, "reason": "r",
                                          "details": ""},
        "tests/test_lab1.py::test_a": {"points": 1, "outcome": "passed", "hidden": False},
        "tests/test_lab1.py::test_z[y]": {"points": 1, "outcome": "passed", "hidden": False},
    }
    manifest = {"tests/test_lab2.py::test_b": {"points": 2, "category": "lab2"},
                "tests/test_tools.py::test_c": {"points": 1, "category": "tools"},
                "tests/test_lab1.py::test_z": {"points": 2, "category": "lab1"},
                "tests/test_lab1.py::test_a": {"points": 1, "category": "lab1"}}
    rows = _function_scores(ran, manifest)
    assert [row["name"] for row in rows] == ["tests/test_lab1.py::test_a", "tests/test_lab1.py::test_z",
                                             "tests/test_lab2.py::test_b", "tests/test_tools.py::test_c"]
    assert [row["earned"] for row in rows] == [1, 1, 2, 1]


def check_gradescope(results: dict) -> None:
    assert isinstance(results["score"], (int, float))
    assert isinstance(results["execution_time"], int) and results["execution_time"] >= 0
    assert isinstance(results["output"], str) and results["output_format"] in GRADESCOPE_OUTPUT_FORMATS
    assert results["output_format"] == "md"   # the kit's output is Markdown: fences, not literal backticks
    numbers = [test["number"] for test in results["tests"]]
    assert len(set(numbers)) == len(numbers)
    assert isinstance(results.get("extra_data", {}), dict)
    for test in results["tests"]:
        assert set(test) == {"name", "number", "score", "max_score", "status", "output", "tags", "visibility"}
        assert isinstance(test["name"], str) and isinstance(test["number"], str)
        assert isinstance(test["tags"], list) and all(isinstance(tag, str) for tag in test["tags"])
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in {"passed", "failed"} and test["visibility"] in GRADESCOPE_VISIBILITIES
        if test["max_score"] > 0:   # a test worth 0 points (a student's own) passes or fails by its outcome alone
            assert (test["status"] == "passed") == (test["score"] == test["max_score"])
        assert isinstance(test["output"], str) and (test["status"] == "passed") == (test["output"] == "")
    assert results["score"] == pytest.approx(sum(test["score"] for test in results["tests"]))
    from tests.grading import CATEGORIES
    ranks = [CATEGORIES.index(test["tags"][0]) for test in results["tests"]]
    assert ranks == sorted(ranks), "Lab 1's tests first, then Lab 2's, the shared code's and the tools'"
    for entry in results.get("leaderboard", []):
        assert set(entry) <= {"name", "value", "order"} and isinstance(entry["name"], str)
        assert isinstance(entry["value"], (int, float, str)) and entry.get("order", "desc") in {"asc", "desc"}


@pytest.mark.points(2)
def test_gradescope_results_follow_its_format_and_a_skip_is_a_failure(student):
    student.makepyfile(test_worth_nothing="import pytest\n\n@pytest.mark.points(0)\ndef test_zero_passes(): pass\n\n"
                                          "@pytest.mark.points(0)\ndef test_zero_fails(): assert False\n")
    grade(student, "--grade-format", "gradescope", "--grade-output", "results.json")
    results = json.loads((student.path / "results.json").read_text())
    check_gradescope(results)
    tests = {test["name"]: test for test in results["tests"]}
    assert results["score"] == 5.0 and sum(test["max_score"] for test in tests.values()) == 12
    assert tests["test_student.py::test_skips"]["status"] == "failed"
    assert "no display" in tests["test_student.py::test_skips"]["output"]
    # A test worth nothing: its status is its outcome, although its score is its maximum either way.
    assert [tests[f"test_worth_nothing.py::test_zero_{outcome}"]["status"] for outcome in ("passes", "fails")] == [
        "passed", "failed"]
    assert "the server never answered" in tests["test_student.py::test_fails"]["output"]
    assert tests["test_student.py::test_half_of_the_cases_pass"]["score"] == 1.0
    assert tests["test_student.py::test_hidden_until_the_due_date"]["visibility"] == "after_due_date"
    assert tests["test_student.py::test_passes"]["visibility"] == "visible"
    assert results["extra_data"]["categories"] == {"tools": {"earned": 5.0, "possible": 12}}
    assert tests["test_student.py::test_passes"]["tags"] == ["tools"]
    assert "category tools" in results["output"]


@pytest.mark.points(2)
def test_prairielearn_results_give_a_fraction_and_points_per_test(student):
    grade(student, "--grade-format", "prairielearn", "--grade-output", "results.json")
    results = json.loads((student.path / "results.json").read_text())
    assert results["gradable"] is True
    assert 0 <= results["score"] <= 1 and results["score"] == pytest.approx(5 / 12)
    assert isinstance(results["message"], str) and isinstance(results["output"], str)
    for test in results["tests"]:
        assert {"name", "points", "max_points", "message", "output"} <= set(test)
        assert 0 <= test["points"] <= test["max_points"]
    tests = {test["name"]: test for test in results["tests"]}
    assert tests["test_student.py::test_skips"]["points"] == 0
    assert "no display" in tests["test_student.py::test_skips"]["message"]
    assert "the server never answered" in tests["test_student.py::test_fails"]["message"]
    assert results["score"] == pytest.approx(sum(t["points"] for t in results["tests"])
                                             / sum(t["max_points"] for t in results["tests"]))
    assert results["categories"] == {"tools": {"earned": 5.0, "possible": 12}}
    assert "category tools" in results["message"]


@pytest.mark.points(2)
def test_junit_xml_counts_its_cases_and_marks_failures_and_skips(student):
    grade(student, "--grade-format", "junit", "--grade-output", "results.xml")
    suite = ElementTree.parse(student.path / "results.xml").getroot()
    assert suite.tag == "testsuite"
    cases = suite.findall("testcase")
    verdicts = {}
    for case in cases:
        assert case.get("classname") and case.get("name") and float(case.get("time")) >= 0
        outcome = [child.tag for child in case if child.tag in {"failure", "error", "skipped"}]
        assert len(outcome) <= 1
        verdicts[case.get("name")] = outcome[0] if outcome else "passed"
    assert int(suite.get("tests")) == len(cases) == 8
    assert int(suite.get("failures")) == list(verdicts.values()).count("failure") == 3
    assert int(suite.get("skipped")) == list(verdicts.values()).count("skipped") == 1
    assert int(suite.get("errors")) == 0
    assert verdicts["test_skips"] == "skipped" and verdicts["test_passes"] == "passed"
    failure = next(case for case in cases if case.get("name") == "test_fails").find("failure")
    assert "the server never answered" in failure.get("message")
    properties = {prop.get("name"): prop.get("value") for prop in suite.findall("properties/property")}
    assert properties["points test_student.py::test_passes"] == "3 (tools)"
    assert properties["points test_student.py::test_half_of_the_cases_pass[1]"] == "0.5 (tools)"   # 2 points, 4 cases
    assert properties["points tools"] == "5/12"
    # pytest's xunit2 schema: properties belong to the suite, a testcase has these attributes and children only.
    assert set(suite.attrib) <= {"name", "errors", "failures", "skipped", "tests", "time", "timestamp", "hostname"}
    assert {child.tag for child in suite} <= {"properties", "testcase", "system-out", "system-err"}
    for case in cases:
        assert set(case.attrib) <= {"name", "classname", "time"}
        assert {child.tag for child in case} <= {"skipped", "error", "failure", "system-out", "system-err"}


@pytest.mark.points(3)
def test_a_hung_test_fails_at_its_deadline_with_a_clear_message_and_the_run_goes_on(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the subprocess imports the plugin from the kit
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(test_hangs='''
import threading
import pytest

@pytest.fixture
def cleaned_up():
    yield
    print("teardown ran")

def test_waits_forever(cleaned_up):
    threading.Event().wait()          # a student's program that never answers

@pytest.mark.deadline(1)
def test_spins_forever_with_its_own_deadline():
    while True:
        pass

def test_after_them():
    pass
''')
    # A subprocess: the deadline is a signal, and the pytest running this test has its own.
    result = pytester.runpytest_subprocess(*NO_PLUGINS, "-s", "--test-deadline", "2",
                                           "--grade-json", "grades.json", timeout=60)
    result.stdout.fnmatch_lines([
        "*TestDeadlineExceeded: test_hangs.py::test_waits_forever did not finish within its deadline of 2 s*",
        "*TestDeadlineExceeded: test_hangs.py::test_spins_forever_with_its_own_deadline did not finish within "
        "its deadline of 1 s*",
    ])
    assert "teardown ran" in result.stdout.str()      # the test's processes are still cleaned up
    grades = json.loads((pytester.path / "grades.json").read_text())["tests"]
    assert grades["test_hangs.py::test_waits_forever"]["outcome"] == "failed"
    assert "deadline of 2 s" in grades["test_hangs.py::test_waits_forever"]["reason"]
    assert grades["test_hangs.py::test_after_them"]["outcome"] == "passed"


@pytest.mark.points(1)
def test_a_students_copy_of_a_role_file_is_what_the_tests_start(tmp_path, monkeypatch):
    from tests.procs import ROLE_OVERRIDES_VARIABLE, Processes, create_test_env_file
    student_copy = tmp_path / "student_server.py"
    student_copy.write_text((ROOT / "lab2_udp" / "server.py").read_text(encoding="utf-8")
                            .replace('"listening on', '"(student copy) listening on'), encoding="utf-8")
    monkeypatch.setenv(ROLE_OVERRIDES_VARIABLE, f"lab2_udp.server={student_copy}")
    env_file = create_test_env_file(tmp_path / ".env")
    with Processes() as processes:
        server = processes.start("lab2_udp.server", "--headless", "--port", "0", "--env", str(env_file),
                                 "--db", str(tmp_path / "chat.db"))
        server.wait_for_stderr(r"^\(student copy\) listening on 127\.0\.0\.1:\d+")


def gradescope_tree(tmp_path, role_file: str, source: str, lab: int | None = None, **more_files: str):
    """An /autograder folder as Gradescope lays it out: the unpacked zip in
    source/ (``lab``: the bundle of that lab's assignment), the student's files
    in submission/ (``role_file`` and any ``more_files``, path: text), an empty results/."""
    from tools.autograder.build import build
    root = tmp_path / "autograder"
    tmp_path.mkdir(exist_ok=True)
    with zipfile.ZipFile(build(tmp_path / "autograder.zip", lab)) as archive:
        archive.extractall(root / "source")
        assert {"setup.sh", "run_autograder", "requirements.txt", role_file} <= set(archive.namelist())
    submitted = root / "submission" / "my-repo" / role_file
    submitted.parent.mkdir(parents=True)
    submitted.write_text(source, encoding="utf-8")
    for path, text in more_files.items():
        (root / "submission" / "my-repo" / path).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / "my-repo" / path).write_text(text, encoding="utf-8")
    (root / "results").mkdir()
    return root


def run_autograder(root, *pytest_args: str, workers: str | None = None) -> dict:
    """Run the bundle's run_autograder on ``root``; ``workers`` sets AUTOGRADER_WORKERS (default: its own)."""
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    if workers is not None:
        env["AUTOGRADER_WORKERS"] = workers
    completed = run_nested([sys.executable, str(root / "source" / "run_autograder"), *pytest_args],
                           timeout=300, env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    return results


# A fast subset of Lab 2's tests: enough to tell a good client from a broken one.
# (Lab 2's test files use no hypothesis: its plugin stays out, a second of CPU saved a run.)
LAB2_SUBSET = ("-k", "test_own_message_appears_only_when_numbered_by_the_server or test_dm_reaches_only_its_recipient"
                     " or test_server_quits_cleanly_while_a_connection_is_in_its_handshake",   # test_lab2_hostile.py
               "-p", "no:hypothesispytest")


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(300)
def test_the_gradescope_autograder_gives_a_good_submission_full_marks_and_names_a_bug(tmp_path):
    # The students' starter leaves the mutants out (each quotes a line of a TODO region).
    mutants = pytest.importorskip("tests.mutants", reason="the students' starter has no tests/mutants.py")
    MUTANTS, mutate = mutants.MUTANTS, mutants.mutate
    reference = (ROOT / "lab2_udp" / "client.py").read_text(encoding="utf-8")
    server = (ROOT / "lab2_udp" / "server.py").read_text(encoding="utf-8")
    # AUTOGRADER_WORKERS=0: three tests gain nothing from two workers, which cost seconds of CPU to start
    # (test_with_workers_in_parallel_the_report_is_the_same_each_test_counted_once checks the grader under them).
    results = run_autograder(gradescope_tree(tmp_path / "good", "lab2_udp/client.py", reference,
                                             **{"lab2_udp/server.py": server}), *LAB2_SUBSET, workers="0")
    names = {test["name"]: test for test in results["tests"]}
    assert len(names) == 3 and all(test["status"] == "passed" for test in names.values()), results
    assert results["score"] == sum(test["max_score"] for test in names.values())
    assert "lab2_udp.client graded from" in results["output"]
    # A submitted Lab 2 server is measured for the leaderboard.
    assert [entry["name"] for entry in results.get("leaderboard", [])] == ["deliveries/s", "p99 ms"], results["output"]

    [echo] = [mutant for mutant in MUTANTS if mutant.name == "lab2 client echoes its own text"]
    results = run_autograder(gradescope_tree(tmp_path / "broken", "lab2_udp/client.py", mutate(echo, reference)),
                             *LAB2_SUBSET, workers="0")
    failed = [test["name"] for test in results["tests"] if test["status"] == "failed"]
    assert failed == [echo.caught_by], results
    assert "leaderboard" not in results    # no server submitted: the kit's own room is not the student's
    assert "my own words" in next(test for test in results["tests"] if test["status"] == "failed")["output"]


# A whole repository submitted for one lab's assignment: both labs' role files, the other lab's
# still the starter's (a TODO raises). The -k names a test of each lab: only the graded lab's may run.
STARTER_ROLE = 'raise NotImplementedError("TODO")\n'
LAB1_AND_LAB2_TEST = ("-k", "test_help_explains_every_option or test_dm_reaches_only_its_recipient",
                      "-p", "no:hypothesispytest")


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(300)
def test_a_lab1_autograder_given_a_whole_repository_grades_lab1_only_and_says_what_it_left_out(tmp_path):
    lab1 = {role: (ROOT / role).read_text(encoding="utf-8") for role in ("lab1_tcp/server.py", "lab1_tcp/client.py")}
    results = run_autograder(gradescope_tree(tmp_path, "lab2_udp/client.py", STARTER_ROLE, lab=1,
                                             **{"lab2_udp/server.py": STARTER_ROLE}, **lab1),
                             *LAB1_AND_LAB2_TEST, workers="0")
    assert [(test["name"].split("::")[-1], test["status"]) for test in results["tests"]] == [
        ("test_help_explains_every_option", "passed")], results
    assert results["score"] == 1 and results["extra_data"]["categories"] == {"lab1": {"earned": 1, "possible": 1}}
    assert results["output"].startswith("lab2_udp/ was submitted too: this assignment grades Lab 1 only.")
    assert "lab1_tcp.server graded from" in results["output"] and "lab2_udp.client graded" not in results["output"]
    assert "leaderboard" not in results    # the Lab 2 server submitted is not measured either


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.deadline(300)
def test_a_lab2_autograder_given_a_whole_repository_grades_lab2_only(tmp_path):
    reference = (ROOT / "lab2_udp" / "client.py").read_text(encoding="utf-8")
    results = run_autograder(gradescope_tree(tmp_path, "lab2_udp/client.py", reference, lab=2,
                                             **{"lab1_tcp/server.py": STARTER_ROLE}),
                             *LAB1_AND_LAB2_TEST, workers="0")
    # Which tests ran, not whether they passed: in the students' starter the client graded is the starter's.
    assert [(test["name"].split("::")[-1], test["tags"]) for test in results["tests"]] == [
        ("test_dm_reaches_only_its_recipient", ["lab2"])], results
    assert list(results["extra_data"]["categories"]) == ["lab2"]
    assert results["output"].startswith("lab1_tcp/ was submitted too: this assignment grades Lab 2 only.")


@pytest.mark.points(1)
def test_an_interrupted_run_still_reports_what_finished_and_counts_the_rest_as_failed(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the subprocess imports the plugin from the kit
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    # The slow test says it has started by connecting to us: accept() waits for it, with a deadline.
    started = socket.create_server(("127.0.0.1", 0))
    started.settimeout(60)
    pytester.makepyfile(test_slow=f'''
import socket
import threading
import pytest

def test_first():
    pass

@pytest.mark.points(3)
def test_still_running():
    socket.create_connection(("127.0.0.1", {started.getsockname()[1]}))
    threading.Event().wait()

def test_never_started():
    pass
''')
    # What run_autograder does at its deadline: SIGINT to pytest, which then writes its results.
    process = subprocess.Popen([sys.executable, "-m", "pytest", *NO_PLUGINS, "--test-deadline", "0",
                                "--grade-format", "gradescope", "--grade-output", "results.json"],
                               cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            started.accept()[0].close()
        except TimeoutError:
            process.kill()
            raise AssertionError("the slow test never started:\n" + process.communicate()[0]) from None
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    finally:
        process.kill()
        started.close()
    results = json.loads((pytester.path / "results.json").read_text())
    check_gradescope(results)
    tests = {test["name"]: test for test in results["tests"]}
    assert tests["test_slow.py::test_first"]["status"] == "passed", output
    for name in ("test_slow.py::test_still_running", "test_slow.py::test_never_started"):
        assert tests[name]["status"] == "failed" and "not finished" in tests[name]["output"], output
    assert tests["test_slow.py::test_still_running"]["max_score"] == 3 and results["score"] == 1


@pytest.mark.points(1)
def test_the_autograder_bundle_installs_only_what_grading_needs_in_a_virtual_environment():
    from tools.autograder.build import requirements
    names = {line.split(">")[0].split("=")[0].split("<")[0] for line in requirements().split()}
    assert {"pytest", "cryptography", "python-dotenv", "hypothesis"} <= names
    assert not names & {"ruff", "matplotlib"}, names
    setup = (ROOT / "tools" / "autograder" / "setup.sh").read_text(encoding="utf-8")
    assert "python3 -m venv /autograder/venv" in setup and "pip install" not in setup.replace(
        "/autograder/venv/bin/python -m pip install", "")   # never pip on the system Python (PEP 668)
    assert '"venv" / "bin" / "python"' in (ROOT / "tools" / "autograder" / "run_autograder").read_text()


@pytest.mark.points(1)
def test_the_autograder_says_so_when_no_role_file_was_submitted(tmp_path):
    root = gradescope_tree(tmp_path, "lab2_udp/client.py", "")
    shutil.rmtree(root / "submission")
    (root / "submission").mkdir()
    (root / "submission" / "notes.txt").write_text("forgot the code")
    completed = run_nested([sys.executable, str(root / "source" / "run_autograder")], timeout=60,
                           env={**os.environ, "AUTOGRADER_ROOT": str(root)})
    assert completed.returncode == 0
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    assert results["score"] == 0 and "No role file found" in results["output"]


@pytest.mark.points(1)
@pytest.mark.parametrize("bundle_lab, variable", [(1, None), (None, "1")], ids=["graded_lab", "AUTOGRADER_LAB"])
def test_a_lab1_autograder_given_only_lab2_files_asks_for_lab1s(tmp_path, bundle_lab, variable):
    # The lab written into the bundle (make autograder LAB=1), or the variable that overrides it.
    root = gradescope_tree(tmp_path, "lab2_udp/client.py", STARTER_ROLE, lab=bundle_lab)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), **({"AUTOGRADER_LAB": variable} if variable else {})}
    # Gradescope runs a copy of the script, /autograder/run_autograder, not the one in source/.
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    completed = run_nested([sys.executable, str(root / "run_autograder")], timeout=60, env=env)
    assert completed.returncode == 0, completed.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    assert results["score"] == 0 and results["tests"] == []
    assert results["output"].startswith("No role file found. Submit lab1_tcp/server.py or lab1_tcp/client.py")
    assert "lab2_udp/ was submitted too: this assignment grades Lab 1 only." in results["output"]


# --- The manifest: a test missing from a clone costs its points ---------------------------------

SUITE_FILES = {
    "test_lab1_chat": '''
import pytest

@pytest.mark.points(3)
def test_kept(): pass

@pytest.mark.points(5)
def test_deleted_later(): pass

@pytest.mark.points(2)
def test_renamed_later(): pass
''',
    "test_framing": '''
import pytest

@pytest.mark.points(4)
@pytest.mark.parametrize("n", [1, 2])
def test_in_a_file_that_breaks_later(n): pass
''',
    "test_tools_report": '''
import pytest

@pytest.mark.points(1)
def test_lab2_named_for_its_lab(): pass
''',
}


@pytest.fixture
def suite(pytester):
    """A small suite under the grader, and its manifest written by --write-manifest."""
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(**SUITE_FILES)
    result = grade(pytester, "--collect-only", "--write-manifest", "expected.json")
    assert result.ret == 0, result.stdout.str()
    return pytester


@pytest.mark.points(3)
def test_a_deleted_renamed_or_unloadable_test_counts_as_failed_with_its_points(suite):
    manifest = json.loads((suite.path / "expected.json").read_text())["tests"]
    assert manifest["test_lab1_chat.py::test_deleted_later"] == {"points": 5, "category": "lab1", "markers": []}
    assert manifest["test_framing.py::test_in_a_file_that_breaks_later"]["category"] == "common"
    assert manifest["test_tools_report.py::test_lab2_named_for_its_lab"]["category"] == "lab2"
    # The student's clone: one test deleted, one renamed, one file that no longer imports,
    # and one test's points raised.
    suite.makepyfile(test_lab1_chat='''
import pytest

@pytest.mark.points(30)
def test_kept(): pass

@pytest.mark.points(2)
def test_renamed(): pass
''', test_framing="import no_such_module\n")
    result = grade(suite, "--grade-manifest", "expected.json", "--grade-json", "grades.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    grades = json.loads((suite.path / "grades.json").read_text())
    assert sorted(grades["missing"]) == ["test_framing.py::test_in_a_file_that_breaks_later",
                                         "test_lab1_chat.py::test_deleted_later",
                                         "test_lab1_chat.py::test_renamed_later"]
    deleted = grades["tests"]["test_lab1_chat.py::test_deleted_later"]
    assert deleted["outcome"] == "failed" and deleted["points"] == 5 and deleted["reason"].startswith("missing:")
    # earned: test_kept 3 (the manifest's points, not the clone's 30) + 1; test_renamed is
    # not in the manifest: it is worth nothing.
    assert grades["not_graded"] == ["test_lab1_chat.py::test_renamed"]
    assert grades["earned"] == 4 and grades["possible"] == 3 + 5 + 2 + 4 + 1
    assert grades["categories"] == {"lab1": {"earned": 3, "possible": 10},
                                    "lab2": {"earned": 1, "possible": 1},
                                    "common": {"earned": 0, "possible": 4}}
    result.stdout.fnmatch_lines(["*category lab1*3.0 / 10*", "*category common*0.0 / 4*",
                                 "missing (3 of tests/expected_tests.json, 11 points, counted as failed):",
                                 "*test_lab1_chat.py::test_deleted_later  (5 points)",
                                 "not graded (1 not in tests/expected_tests.json, worth 0 points):",
                                 "*test_lab1_chat.py::test_renamed"])


@pytest.mark.points(2)
@pytest.mark.deadline(240)
def test_with_workers_in_parallel_the_report_is_the_same_each_test_counted_once(suite, monkeypatch):
    """pytest-xdist (make test runs -n 4): the workers' results reach the
    controller, which alone writes the report; a worker's missing tests and
    its deadlines count as in a single run."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the workers import the plugin from the kit
    suite.makepyfile(test_lab1_chat="import pytest\n\n@pytest.mark.points(3)\ndef test_kept(): pass\n",
                     test_framing="import no_such_module\n", test_student=STUDENT_TESTS,
                     test_hangs="import threading\n\ndef test_waits_forever():\n    threading.Event().wait()\n")
    reports = {}
    for name, workers in (("single", []), ("parallel", ["-n", "2", "--dist", "load"])):
        result = suite.runpytest_subprocess(*NO_PLUGINS, "--test-deadline", "2", *workers,
                                            "--grade-manifest", "expected.json", "--grade-json", f"{name}.json",
                                            "--grade-format", "gradescope", "--grade-output", f"{name}-gs.json",
                                            timeout=180)
        assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
        assert result.stdout.str().count("= grading =") == 1, result.stdout.str()
        reports[name] = json.loads((suite.path / f"{name}.json").read_text())
        reports[name]["not_graded"].sort()    # in the order the results came: the workers' race
        gradescope = json.loads((suite.path / f"{name}-gs.json").read_text())
        reports[name + " gradescope"] = sorted((test["name"], test["score"], test["max_score"], test["status"])
                                               for test in gradescope["tests"])
    assert reports["parallel"] == reports["single"]
    assert reports["parallel gradescope"] == reports["single gradescope"]
    assert sorted(reports["parallel"]["missing"]) == ["test_framing.py::test_in_a_file_that_breaks_later",
                                                      "test_lab1_chat.py::test_deleted_later",
                                                      "test_lab1_chat.py::test_renamed_later"]
    assert "deadline of 2 s" in reports["parallel"]["tests"]["test_hangs.py::test_waits_forever"]["reason"]
    assert reports["parallel"]["tests"]["test_student.py::test_half_of_the_cases_pass[2]"]["outcome"] == "failed"


@pytest.mark.points(2)
def test_a_test_the_run_did_not_ask_for_is_not_missing(suite):
    suite.makepyfile(test_lab1_chat="import pytest\n\n@pytest.mark.points(3)\ndef test_kept(): pass\n")
    for selection in (["test_tools_report.py"], ["-k", "test_kept or named_for"],
                      ["test_lab1_chat.py::test_kept"], ["--deselect", "test_lab1_chat.py::test_deleted_later",
                                                         "--deselect", "test_lab1_chat.py::test_renamed_later"],
                      ["--grade-category", "lab2"]):
        (suite.path / "grades.json").unlink(missing_ok=True)
        grade(suite, "--grade-manifest", "expected.json", "--grade-json", "grades.json", *selection)
        assert json.loads((suite.path / "grades.json").read_text())["missing"] == [], selection
    grade(suite, "--grade-manifest", "expected.json", "--grade-json", "grades.json", "-k", "deleted")
    assert json.loads((suite.path / "grades.json").read_text())["missing"] == ["test_lab1_chat.py::test_deleted_later"]
    grade(suite, "--grade-manifest", "expected.json", "--grade-json", "grades.json", "--grade-category", "lab2")
    assert list(json.loads((suite.path / "grades.json").read_text())["tests"]) == [
        "test_tools_report.py::test_lab2_named_for_its_lab"]   # its name puts it in lab2, not its file


@pytest.mark.points(2)
def test_the_manifest_holds_every_test_of_the_suite_with_its_points(tmp_path):
    from tests.grading import WRITE_MANIFEST_COMMAND
    collected = tmp_path / "expected_tests.json"
    completed = run_nested([sys.executable, "-m", "pytest", "--collect-only", "-qq", "-p", "no:cacheprovider",
                            f"--write-manifest={collected}", "tests"], timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    now = json.loads(collected.read_text())["tests"]
    checked_in = json.loads((ROOT / "tests" / "expected_tests.json").read_text())["tests"]
    changes = ([f"new: {name}" for name in now.keys() - checked_in.keys()]
               + [f"gone: {name}" for name in checked_in.keys() - now.keys()]
               + [f"changed: {name}" for name in now.keys() & checked_in.keys() if now[name] != checked_in[name]])
    assert not changes, (f"tests/expected_tests.json is out of step with the suite; run `{WRITE_MANIFEST_COMMAND}` "
                         "and commit it with the handouts' rubrics:\n" + "\n".join(sorted(changes)))
    assert collected.read_text() == (ROOT / "tests" / "expected_tests.json").read_text()


@pytest.mark.points(1)
def test_the_tests_handed_out_first_are_tests_of_the_suite():
    from tests.conftest import FIRST_FILES, MUTANTS_TEST, RUN_FIRST
    manifest = json.loads((ROOT / "tests" / "expected_tests.json").read_text())["tests"]
    # A renamed test would drop out of the order silently, and run wherever its file comes. (The
    # students' starter leaves test_starter.py and test_mutants.py out: their tests are not there.)
    here = [entry for entry in RUN_FIRST if (ROOT / "tests" / entry.split("::")[0]).exists()]
    assert here and [entry for entry in here if f"tests/{entry}" not in manifest] == []
    files = {function.split("::")[0] for function in manifest}
    assert [name for name in FIRST_FILES if (ROOT / "tests" / name).exists() and f"tests/{name}" not in files] == []
    if (ROOT / "tests" / "test_mutants.py").exists():
        assert f"tests/test_mutants.py::{MUTANTS_TEST}" in manifest


@pytest.mark.points(1)
def test_each_handout_ends_with_its_rubric_from_the_manifest():
    from tests.grading import HANDOUTS, WRITE_MANIFEST_COMMAND, handout_from_manifest, rubric
    manifest = json.loads((ROOT / "tests" / "expected_tests.json").read_text())["tests"]
    for lab, handout in HANDOUTS.items():
        text = (ROOT / handout).read_text(encoding="utf-8")
        assert text.endswith(rubric(manifest, lab)) and text == handout_from_manifest(text, manifest, lab), (
            f"{handout}'s tasks or rubric are not those of {lab} in tests/expected_tests.json: "
            f"run `{WRITE_MANIFEST_COMMAND}`")


@pytest.mark.points(2)
def test_the_handouts_tasks_and_the_labs_tests_and_regions_match_one_to_one():
    from tests.grading import HANDOUTS, TASK_COMMAND
    from tests.tasks import TASKS
    from tools.starter import find_regions, region_function
    manifest = json.loads((ROOT / "tests" / "expected_tests.json").read_text())["tests"]
    names = {task.name for task in TASKS}
    for function, entry in manifest.items():
        if entry["category"] in HANDOUTS:   # every test of a lab checks one task of that lab
            assert entry.get("task") in names and entry["task"].startswith(entry["category"] + "."), function
        else:
            assert "task" not in entry, function
    for task in TASKS:
        assert any(entry.get("task") == task.name for entry in manifest.values()), f"{task.name} has no test"
        assert f"Check it: `{TASK_COMMAND.format(name=task.name)}`" in (ROOT / HANDOUTS[task.lab]).read_text()
    # Every TODO region of the role files belongs to exactly one task of its lab.
    regions = []
    for path in ("lab1_tcp/client.py", "lab1_tcp/server.py", "lab2_udp/client.py", "lab2_udp/server.py"):
        text = (ROOT / path).read_text(encoding="utf-8")
        regions += [f"{path}::{region_function(text, region)}" for region in find_regions(text, path)]
    if not regions:   # the students' starter: each region is a TODO now, with no marker left to find
        pytest.skip("the role files hold no solution regions (the students' starter): a check of the kit's own")
    assigned = [(region, task.lab) for task in TASKS for region in task.regions]
    assert sorted(region for region, _lab in assigned) == sorted(regions)
    assert all(region.startswith(f"{lab}_") for region, lab in assigned)


@pytest.mark.points(1)
def test_grade_task_runs_exactly_the_tests_of_one_task():
    manifest = json.loads((ROOT / "tests" / "expected_tests.json").read_text())["tests"]
    completed = run_nested([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                            "--grade-task", "lab1.1", "tests"], timeout=120, cwd=ROOT)
    collected = {line.split("[")[0] for line in completed.stdout.splitlines() if "::" in line}
    assert collected == {function for function, entry in manifest.items() if entry.get("task") == "lab1.1"}, (
        completed.stdout + completed.stderr)


@pytest.mark.points(2)
def test_a_test_deleted_from_a_copy_of_the_kit_costs_its_points(tmp_path):
    from tools.autograder.build import kit_files
    kit = tmp_path / "kit"
    for name in kit_files():
        (kit / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, kit / name)
    tests = kit / "tests" / "test_noise.py"
    source = tests.read_text(encoding="utf-8")
    deleted = "test_wrong_psk_is_rejected_by_the_server"
    start = source.index(f"def {deleted}(")
    start = source.rindex("\n\n\n", 0, start)             # with its decorators
    end = source.find("\n\n\n", source.index(f"def {deleted}("))
    tests.write_text(source[:start] + source[end:], encoding="utf-8")
    completed = run_nested([sys.executable, "-m", "pytest", "tests/test_noise.py", *NO_PLUGINS,
                            "--grade-json", "grades.json"], timeout=300, cwd=kit)
    grades = json.loads((kit / "grades.json").read_text())
    manifest = json.loads((ROOT / "tests" / "expected_tests.json").read_text())["tests"]
    function = f"tests/test_noise.py::{deleted}"
    assert grades["missing"] == [function], completed.stdout
    assert completed.returncode == 1          # every other test passed: the missing one fails the run
    assert grades["tests"][function]["outcome"] == "failed"
    assert grades["tests"][function]["points"] == manifest[function]["points"]
    assert grades["possible"] == sum(entry["points"] for name, entry in manifest.items()
                                     if name.startswith("tests/test_noise.py::"))
    assert f"{function}  ({manifest[function]['points']} points)" in completed.stdout


# --- The leaderboard: a few seconds of the student's room ---------------------------------------

# The students' starter leaves the benchmarks out (their simulated client mirrors Lab 2's).
needs_the_benchmark = pytest.mark.skipif(not (ROOT / "bench" / "leaderboard.py").exists(),
                                         reason="the students' starter has no bench/leaderboard.py")


@needs_the_benchmark
@pytest.mark.network
@pytest.mark.points(2)
def test_the_leaderboard_gives_the_rooms_deliveries_per_second_and_p99(student):
    grade(student, "--grade-leaderboard", "--grade-format", "gradescope", "--grade-output", "results.json")
    results = json.loads((student.path / "results.json").read_text())
    check_gradescope(results)
    deliveries, p99 = results["leaderboard"]
    assert deliveries["name"] == "deliveries/s" and deliveries["order"] == "desc" and deliveries["value"] > 0
    assert p99["name"] == "p99 ms" and p99["order"] == "asc" and p99["value"] > 0
    assert results["score"] == 5.0                      # the benchmark is no test: it changes no points
    assert f"leaderboard: {deliveries['value']} deliveries/s" in results["output"]


@needs_the_benchmark
@pytest.mark.network
@pytest.mark.points(2)
def test_a_failing_benchmark_leaves_the_leaderboard_out_saying_why_and_costs_nothing(student, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the subprocess imports the plugin from the kit
    (student.path / "server.py").write_text('raise SystemExit("this server never listens")\n')
    # A subprocess: --role sets the environment of the process that grades.
    grade_run = student.runpytest_subprocess(*NO_PLUGINS, "--role", "lab2_udp.server=server.py",
                                             "--grade-leaderboard", "--grade-format", "gradescope",
                                             "--grade-output", "results.json", timeout=120)
    results = json.loads((student.path / "results.json").read_text())
    check_gradescope(results)
    assert "leaderboard" not in results and results["score"] == 5.0
    assert ("leaderboard left out: the benchmark failed: the server did not start: this server never listens"
            in results["output"])
    grade_run.stdout.fnmatch_lines(["leaderboard left out: the benchmark failed*"])


# --- A failed window test leaves a picture of its screen ----------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.gui
@pytest.mark.linux_only("Xvfb")
@pytest.mark.points(2)
def test_a_failed_window_test_leaves_a_png_of_its_screen_in_prairielearns_results(pytester, monkeypatch):
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); CI installs it")
    if not (shutil.which("import") or shutil.which("xwd") and shutil.which("convert")):
        pytest.skip("ImageMagick is not installed (apt-get install imagemagick); CI installs it")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # the subprocess imports the plugin from the kit
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n'
                          'from tests.xvfb import xvfb_display  # noqa: F401  (a fixture)\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n    gui: windows\n")
    pytester.makepyfile(test_window='''
import tkinter
import pytest

@pytest.mark.gui
@pytest.mark.points(2)
def test_window_shows_the_greeting(xvfb_display):
    root = tkinter.Tk(screenName=xvfb_display)
    root.title("a student's window")
    tkinter.Label(root, text="hello, room", font=("TkDefaultFont", 40)).pack(padx=40, pady=40)
    root.update()
    assert False, "the greeting never appeared"

@pytest.mark.points(1)
def test_no_window(): assert False
''')
    # A subprocess: Tk and Xvfb stay out of the process that runs this test.
    pytester.runpytest_subprocess(*NO_PLUGINS, "--grade-format", "prairielearn",
                                  "--grade-output", "results.json", "--grade-json", "grades.json", timeout=120)
    tests = {test["name"]: test for test in json.loads((pytester.path / "results.json").read_text())["tests"]}
    [image] = tests["test_window.py::test_window_shows_the_greeting"]["images"]
    assert image["label"].startswith("the screen when it failed")
    prefix = "data:image/png;base64,"
    assert image["url"].startswith(prefix)
    png = base64.b64decode(image["url"][len(prefix):], validate=True)
    assert png.startswith(PNG_SIGNATURE) and len(png) > len(PNG_SIGNATURE)
    assert "images" not in tests["test_window.py::test_no_window"]    # not a window test
    grades = json.loads((pytester.path / "grades.json").read_text())["tests"]
    path = Path(grades["test_window.py::test_window_shows_the_greeting"]["screenshot"])
    assert path.parent == pytester.path / "screenshots" and path.read_bytes() == png


# --- Tests that need Linux, on a laptop that is not -----------------------------------------------

LINUX_ONLY_TESTS = '''
import pathlib
import pytest

@pytest.fixture
def xvfb_display():          # stands in for tests/xvfb.py's: the name says Xvfb
    pathlib.Path("xvfb-started").write_text("yes")
    return ":99"

@pytest.mark.points(3)
def test_portable(): pass

@pytest.mark.linux_only("network namespaces")
@pytest.mark.points(2)
def test_hosts_in_namespaces(): pass

@pytest.mark.points(1)
def test_window(xvfb_display): pass

@pytest.mark.points(4)
def test_skips_for_another_reason(): pytest.skip("no root")
'''


@pytest.mark.points(3)
@pytest.mark.parametrize("platform, workers", [("darwin", []), ("win32", []), ("darwin", ["-n", "2"])])
def test_tests_that_need_linux_are_not_run_on_a_laptop_and_leave_the_maximum_labelled_not_run_here(
        pytester, monkeypatch, platform, workers):
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(test_student=LINUX_ONLY_TESTS)
    monkeypatch.setenv("CHAT_TESTS_PLATFORM", platform)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))   # pytest-xdist's workers (make test's -n 4) import the plugin
    result = grade(pytester, *workers, "--grade-json", "grades.json", "--grade-format", "gradescope",
                   "--grade-output", "results.json")
    result.stdout.fnmatch_lines(["*test_student.py*3.0 / 7 *(4 skipped, 3 not run here, needs Linux)*",
                                 "total*3.0 / 7 *",
                                 "not run here (2 tests that need Linux, 3 points left out of the total*",
                                 "  test_student.py::test_hosts_in_namespaces",
                                 "  test_student.py::test_window"])
    assert not (pytester.path / "xvfb-started").exists()     # not run: not even its fixture
    grades = json.loads((pytester.path / "grades.json").read_text())
    assert (grades["earned"], grades["possible"], grades["not_run_here"]) == (3, 7, 3)
    tests = grades["tests"]
    assert tests["test_student.py::test_hosts_in_namespaces"]["outcome"] == "not run here"
    assert "needs Linux: network namespaces" in tests["test_student.py::test_hosts_in_namespaces"]["reason"]
    assert "needs Linux: Xvfb" in tests["test_student.py::test_window"]["reason"]
    # A skip for any other reason is still a skip: in the maximum, not earned.
    assert tests["test_student.py::test_skips_for_another_reason"]["outcome"] == "skipped"
    results = json.loads((pytester.path / "results.json").read_text())
    check_gradescope(results)   # a test not run here is worth 0 points, and failed
    gradescope = {test["name"]: test for test in results["tests"]}
    namespaces = gradescope["test_student.py::test_hosts_in_namespaces"]
    assert (namespaces["score"], namespaces["max_score"], namespaces["status"]) == (0, 0, "failed")
    assert "not run here" in namespaces["output"]


@pytest.mark.points(1)
def test_on_linux_the_tests_that_need_it_run_and_count(pytester, monkeypatch):
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(test_student=LINUX_ONLY_TESTS)
    monkeypatch.setenv("CHAT_TESTS_PLATFORM", "linux")
    result = grade(pytester, "--grade-json", "grades.json")
    result.stdout.fnmatch_lines(["*test_student.py*6.0 / 10 *(4 skipped)*", "total*6.0 / 10 *"])
    assert "not run here" not in result.stdout.str()
    assert (pytester.path / "xvfb-started").exists()
    grades = json.loads((pytester.path / "grades.json").read_text())
    assert (grades["earned"], grades["possible"], grades["not_run_here"]) == (6, 10, 0)


@pytest.mark.points(1)
def test_a_linux_only_need_that_tests_platforms_does_not_name_stops_the_run(pytester):
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(test_student='import pytest\n\n@pytest.mark.linux_only("kqueue")\ndef test_x(): pass\n')
    result = grade(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*linux_only('kqueue',) names none of network namespaces, loopback capture*"])
