"""kit.py, the README's set-up on every platform: the right .venv paths, a Python too old
refused in one line or replaced by a newer one on PATH, tkinter's absence said with its
fix, the kit installed again only when pyproject.toml changed, and .env written once.

The steps that would install (venv, pip) are recorded, not run: a real install takes a
minute and the network. `make test` itself runs through kit.py, so it is used every run.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kit
from common import doctor


@pytest.fixture
def fake_kit(tmp_path, monkeypatch):
    """kit.py pointed at a folder of its own, whose set-up steps are recorded, not run."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    monkeypatch.setattr(kit, "ROOT", str(tmp_path))
    monkeypatch.setattr(kit, "VENV", str(tmp_path / ".venv"))
    monkeypatch.setattr(kit, "STAMP", str(tmp_path / ".venv" / ".installed"))
    monkeypatch.setattr(kit, "ENV_FILE", str(tmp_path / ".env"))
    steps: list[list[str]] = []

    def run(command):
        steps.append(command)
        if command[1:3] == ["-m", "venv"]:        # what venv would make: its python and pyvenv.cfg
            python = Path(kit.venv_python())
            python.parent.mkdir(parents=True, exist_ok=True)
            python.write_text("")
            (tmp_path / ".venv" / "pyvenv.cfg").write_text("version = %d.%d.0\n" % sys.version_info[:2])
        if command[-1].endswith("create_env_file('.env')"):
            (tmp_path / ".env").write_text("keys\n")

    monkeypatch.setattr(kit, "_run", run)
    return tmp_path, steps


def test_kit_venv_python_is_in_scripts_on_windows_and_in_bin_elsewhere(monkeypatch):
    monkeypatch.setattr(kit.os, "name", "nt")
    assert kit.venv_python().endswith(os.path.join(".venv", "Scripts", "python.exe"))
    monkeypatch.setattr(kit.os, "name", "posix")
    assert kit.venv_python().endswith(os.path.join(".venv", "bin", "python"))


def test_kit_installs_once_then_again_only_when_pyproject_changes_and_writes_env_once(fake_kit, capsys):
    folder, steps = fake_kit
    kit.setup()
    assert [step[1:3] for step in steps[:3]] == [["-m", "venv"], ["-m", "pip"], ["-m", "pip"]]
    assert steps[2][-1] == ".[test]" and "--prefer-binary" in steps[2]
    assert steps[3][-1].endswith("create_env_file('.env')")
    assert "wrote .env with fresh random keys" in capsys.readouterr().out
    steps.clear()
    kit.setup()                                   # nothing changed: nothing to do
    assert steps == []
    (folder / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\n')
    kit.setup()                                   # new dependencies: pip again, the same .venv and .env
    assert [step[1:3] for step in steps] == [["-m", "pip"], ["-m", "pip"]]


def test_kit_makes_again_a_venv_that_a_python_older_than_3_10_made(fake_kit, capsys):
    folder, steps = fake_kit
    kit.setup()
    (folder / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.9.6\n")
    steps.clear()
    kit.setup()
    assert ".venv was made by Python 3.9; making it again" in capsys.readouterr().out
    assert [step[1:3] for step in steps] == [["-m", "venv"], ["-m", "pip"], ["-m", "pip"]]


def test_kit_installs_again_into_a_venv_whose_python_is_gone(fake_kit):
    folder, steps = fake_kit
    kit.setup()
    Path(kit.venv_python()).unlink()              # a half-deleted .venv: the stamp is still there
    steps.clear()
    kit.setup()
    assert [step[1:3] for step in steps] == [["-m", "venv"], ["-m", "pip"], ["-m", "pip"]]


def test_kit_refuses_a_python_older_than_3_10_in_one_line_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "version_info", (3, 9, 6, "final", 0))
    monkeypatch.setenv("PATH", str(tmp_path))     # no newer python3.x to run under instead
    for platform, fix in [("darwin", "python.org"), ("win32", "py kit.py"), ("linux", "apt-get install")]:
        monkeypatch.setattr(sys, "platform", platform)
        with pytest.raises(SystemExit) as stopped:
            kit.require_python()
        message = str(stopped.value.code)
        assert message.startswith("kit.py: the kit needs Python 3.10 or newer, this is 3.9: ")
        assert fix in message and "\n" not in message


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in python3.12 is a shell script")
def test_kit_under_an_old_python3_runs_again_under_a_newer_python3_on_path(tmp_path):
    """macOS's /usr/bin/python3 is 3.9: kit.py finds python3.12 on PATH and re-runs there."""
    said = tmp_path / "said"
    stand_in = tmp_path / "python3.12"
    stand_in.write_text(f'#!/bin/sh\necho "$@" > {said}\n')
    stand_in.chmod(0o755)
    code = ("import sys; sys.version_info = (3, 9, 6, 'final', 0); sys.argv = ['kit.py', 'test', '-k', 'lab1']; "
            "import kit; kit.require_python()")
    env = {**os.environ, "PATH": str(tmp_path)}
    env.pop(kit.REEXEC_VARIABLE, None)
    finished = subprocess.run([sys.executable, "-c", code], cwd=kit.ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert f"running under {stand_in}" in finished.stdout
    assert said.read_text().split() == [os.path.abspath(kit.__file__), "test", "-k", "lab1"]


@pytest.mark.parametrize("platform, fix", [
    ("win32", "python.org installer"), ("darwin", "brew install python-tk@"), ("linux", "apt-get install python3-tk")])
def test_kit_says_in_one_line_how_to_get_tkinter_when_it_is_missing(monkeypatch, platform, fix):
    monkeypatch.setitem(sys.modules, "tkinter", None)      # import tkinter now raises ImportError
    monkeypatch.setattr(sys, "platform", platform)
    line = kit.tkinter_missing_line()
    assert line.startswith("kit.py: tkinter is missing") and fix in line and "\n" not in line


def test_kit_without_a_known_command_prints_its_usage():
    finished = subprocess.run([sys.executable, "kit.py", "build"], cwd=kit.ROOT, capture_output=True, text=True,
                              timeout=60)
    assert finished.returncode == 1
    assert finished.stderr.startswith("usage: python3 kit.py demo|test|setup")


def test_kit_reads_as_python_3_6_so_an_old_python_gets_its_one_line_not_a_syntax_error():
    """kit.py must get as far as its version check under the Python it refuses (macOS's
    /usr/bin/python3 is 3.9): no syntax newer than 3.6, the first with f-strings."""
    source = Path(kit.__file__).read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 6))
    assert "from __future__ import annotations" not in source    # 3.7+


@pytest.mark.skipif(os.name == "nt", reason="POSIX: kit.py becomes the program with exec")
@pytest.mark.parametrize("command, expected", [
    (["test", "-k", "lab1", "-x"],
     ["-m", "pytest", "-n", "4", "--dist", "load", "--maxschedchunk", "1", "-k", "lab1", "-x"]),
    (["demo", "--loss", "0.3"], ["-m", "lab2_udp.demo", "--loss", "0.3"]),
])
def test_kit_runs_the_demo_or_pytest_in_the_venv_with_the_arguments_it_was_given(monkeypatch, command, expected):
    ran = []

    class Became(Exception):
        pass

    def execv(path, argv):
        ran.append((path, argv))
        raise Became

    monkeypatch.setattr(kit, "setup", lambda: "/kit/.venv/bin/python")
    monkeypatch.setattr(kit.os, "execv", execv)
    monkeypatch.chdir(kit.ROOT)
    with pytest.raises(Became):
        kit.main(command)
    assert ran == [("/kit/.venv/bin/python", ["/kit/.venv/bin/python", *expected])]


def test_the_env_file_that_kit_setup_writes_passes_the_doctor(fake_kit):
    folder, steps = fake_kit
    kit.setup()
    write_env = next(step for step in steps if step[-1].endswith("create_env_file('.env')"))
    (folder / ".env").unlink()   # the fake's: now the real step, in the folder kit.py sets up
    subprocess.run([sys.executable, *write_env[1:]], cwd=folder, check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(kit.__file__).resolve().parent)})
    checks, settings = doctor.check_env_file(str(folder / ".env"))
    assert settings is not None and [check.fix for check in checks] == [""], checks   # no FAIL


@pytest.mark.points(1)
def test_git_ignores_the_files_that_hold_keys_or_students_work_and_keeps_the_example(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    # A folder of its own, with the kit's .gitignore: the check works in a copy that is no checkout too.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(Path(kit.ROOT) / ".gitignore", tmp_path / ".gitignore")
    ignored = [".env", "students.env", "mine.env", "lab1_tcp/mine.env", "chat.db", "submissions/alice/client.py",
               "interop.json", "autograder.zip", "starter/README.md"]
    kept = [".env.example", "lab1_tcp/server.py"]
    completed = subprocess.run(["git", "check-ignore", "--no-index", *ignored, *kept], cwd=tmp_path,
                               capture_output=True, text=True, check=False)
    assert completed.stdout.split() == ignored, completed.stdout + completed.stderr
