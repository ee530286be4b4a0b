"""The grading report sums the points of passed tests, and says what was skipped."""
import json

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.points(2)
def test_grading_report_counts_passes_fails_skips_and_shares_parametrized_points(pytester):
    pytester.makeconftest('pytest_plugins = ["tests.grading"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    points(n): points\n")
    pytester.makepyfile(test_student='''
import pytest

@pytest.mark.points(3)
def test_passes(): pass

@pytest.mark.points(2)
def test_fails(): assert False

@pytest.mark.points(4)
def test_skips(): pytest.skip("no display")

@pytest.mark.points(2)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_half_of_the_cases_pass(n): assert n % 2
''')
    result = pytester.runpytest("--grade-json", "grades.json")
    result.stdout.fnmatch_lines(["*test_student.py*4.0 / 11*(4 skipped)*", "total*4.0 / 11*"])
    grades = json.loads((pytester.path / "grades.json").read_text())
    assert grades["earned"] == 4.0 and grades["possible"] == 11
    assert grades["tests"]["test_student.py::test_fails"] == {"points": 2, "outcome": "failed"}


@pytest.mark.points(1)
def test_a_students_copy_of_a_role_file_is_what_the_tests_start(tmp_path, monkeypatch):
    from tests.procs import ROLE_OVERRIDES_VARIABLE, ROOT, Processes, create_test_env_file
    student_copy = tmp_path / "student_server.py"
    student_copy.write_text((ROOT / "lab2_udp" / "server.py").read_text(encoding="utf-8")
                            .replace('"listening on', '"(student copy) listening on'), encoding="utf-8")
    monkeypatch.setenv(ROLE_OVERRIDES_VARIABLE, f"lab2_udp.server={student_copy}")
    env_file = create_test_env_file(tmp_path / ".env")
    with Processes() as processes:
        server = processes.start("lab2_udp.server", "--headless", "--port", "0", "--env", str(env_file),
                                 "--db", str(tmp_path / "chat.db"))
        server.wait_for_stderr(r"^\(student copy\) listening on 127\.0\.0\.1:\d+")
