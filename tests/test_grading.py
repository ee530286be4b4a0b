"""The grading report: points of passed tests, skips never counted as passes,
a deadline for every test, and the formats that autograding platforms read.

Each format is checked against rules written here from the platform's public
documentation (no network at test time):

- Gradescope, "Autograder Specifications", results.json: ``score``,
  ``execution_time``, ``output``, ``output_format``; ``tests[]`` with
  ``name``, ``number``, ``score``, ``max_score``, ``status`` ("passed" or
  "failed"), ``output`` and ``visibility`` ("hidden", "after_due_date",
  "after_published" or "visible").
- PrairieLearn, "External grading", results.json: ``gradable``, ``score`` from
  0 to 1, ``message``, ``output``; ``tests[]`` with ``name``, ``points``,
  ``max_points``, ``message``, ``output``.
- JUnit XML as CI systems read it (GitHub Actions reporters, Jenkins): a
  ``testsuite`` whose ``tests``, ``failures``, ``errors`` and ``skipped``
  count its ``testcase`` elements; a testcase holds at most one ``failure``,
  ``error`` or ``skipped``.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile

import pytest

from tests.procs import ROOT

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


def grade(pytester, *args: str):
    return pytester.runpytest("-p", "no:cacheprovider", *args)


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


def check_gradescope(results: dict) -> None:
    assert isinstance(results["score"], (int, float))
    assert isinstance(results["execution_time"], int) and results["execution_time"] >= 0
    assert isinstance(results["output"], str) and results["output_format"] in GRADESCOPE_OUTPUT_FORMATS
    numbers = [test["number"] for test in results["tests"]]
    assert len(set(numbers)) == len(numbers)
    for test in results["tests"]:
        assert set(test) == {"name", "number", "score", "max_score", "status", "output", "visibility"}
        assert isinstance(test["name"], str) and isinstance(test["number"], str)
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in {"passed", "failed"} and test["visibility"] in GRADESCOPE_VISIBILITIES
        assert (test["status"] == "passed") == (test["score"] == test["max_score"])
        assert isinstance(test["output"], str) and (test["status"] == "passed") == (test["output"] == "")
    assert results["score"] == pytest.approx(sum(test["score"] for test in results["tests"]))


@pytest.mark.points(2)
def test_gradescope_results_follow_its_format_and_a_skip_is_a_failure(student):
    grade(student, "--grade-format", "gradescope", "--grade-output", "results.json")
    results = json.loads((student.path / "results.json").read_text())
    check_gradescope(results)
    tests = {test["name"]: test for test in results["tests"]}
    assert results["score"] == 5.0 and sum(test["max_score"] for test in tests.values()) == 12
    assert tests["test_student.py::test_skips"]["status"] == "failed"
    assert "no display" in tests["test_student.py::test_skips"]["output"]
    assert "the server never answered" in tests["test_student.py::test_fails"]["output"]
    assert tests["test_student.py::test_half_of_the_cases_pass"]["score"] == 1.0
    assert tests["test_student.py::test_hidden_until_the_due_date"]["visibility"] == "after_due_date"
    assert tests["test_student.py::test_passes"]["visibility"] == "visible"


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
    points = {case.get("name"): case.find("properties/property[@name='points']").get("value") for case in cases}
    assert points["test_passes"] == "3"


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
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--test-deadline", "2",
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


def gradescope_tree(tmp_path, role_file: str, source: str):
    """An /autograder folder as Gradescope lays it out: the unpacked zip in
    source/, the student's files in submission/, an empty results/."""
    from tools.autograder.build import build
    root = tmp_path / "autograder"
    tmp_path.mkdir(exist_ok=True)
    with zipfile.ZipFile(build(tmp_path / "autograder.zip")) as archive:
        archive.extractall(root / "source")
        assert {"setup.sh", "run_autograder", "requirements.txt", role_file} <= set(archive.namelist())
    submitted = root / "submission" / "my-repo" / role_file
    submitted.parent.mkdir(parents=True)
    submitted.write_text(source, encoding="utf-8")
    (root / "results").mkdir()
    return root


def run_autograder(root, *pytest_args: str) -> dict:
    completed = subprocess.run([sys.executable, str(root / "source" / "run_autograder"), *pytest_args],
                               env={**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    check_gradescope(results)
    return results


# A fast subset of Lab 2's tests: enough to tell a good client from a broken one.
LAB2_SUBSET = ("-k", "test_own_message_appears_only_when_numbered_by_the_server or test_dm_reaches_only_its_recipient"
                     " or test_role_file_reads_in_at_most_350_lines")


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(300)
def test_the_gradescope_autograder_gives_a_good_submission_full_marks_and_names_a_bug(tmp_path):
    from tests.mutants import MUTANTS, mutate
    reference = (ROOT / "lab2_udp" / "client.py").read_text(encoding="utf-8")
    results = run_autograder(gradescope_tree(tmp_path / "good", "lab2_udp/client.py", reference), *LAB2_SUBSET)
    names = {test["name"]: test for test in results["tests"]}
    assert len(names) == 3 and all(test["status"] == "passed" for test in names.values()), results
    assert results["score"] == sum(test["max_score"] for test in names.values())
    assert "lab2_udp.client graded from" in results["output"]

    [echo] = [mutant for mutant in MUTANTS if mutant.name == "lab2 client echoes its own text"]
    results = run_autograder(gradescope_tree(tmp_path / "broken", "lab2_udp/client.py", mutate(echo, reference)),
                             *LAB2_SUBSET)
    failed = [test["name"] for test in results["tests"] if test["status"] == "failed"]
    assert failed == [echo.caught_by], results
    assert "my own words" in next(test for test in results["tests"] if test["status"] == "failed")["output"]


@pytest.mark.points(1)
def test_the_autograder_says_so_when_no_role_file_was_submitted(tmp_path):
    root = gradescope_tree(tmp_path, "lab2_udp/client.py", "")
    shutil.rmtree(root / "submission")
    (root / "submission").mkdir()
    (root / "submission" / "notes.txt").write_text("forgot the code")
    completed = subprocess.run([sys.executable, str(root / "source" / "run_autograder")],
                               env={**os.environ, "AUTOGRADER_ROOT": str(root)},
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0 and "No role file found" in results["output"]
