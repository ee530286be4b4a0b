"""A black-box test fails as soon as waiting is pointless, and says why first.

When the role a test waits on has ended, or any role of the test has printed
a traceback (died, or reported an error and carried on), the wait ends at
once (tests/procs.py) and the failure leads with the cause: the error, and
the file and line that raised it. A student's first run of the starter then
reads "NotImplementedError: <the first TODO>" at the top of its first
failure, in seconds, instead of a time-out after the deadline.
"""
from __future__ import annotations

import ast
import json
import os
import select
import socket
import sys
import threading
import time

import pytest

from tests.procs import (
    DEADLINE_SECONDS, ROLE_OVERRIDES_VARIABLE, ROOT, WATCH_INTERVAL_SECONDS, Processes, run_nested,
)
from tools.starter import starter_python

# Stand-ins for role files (procs.role_command starts a file in place of a role).
EXITS_EARLY = "import sys\nprint('cannot go on: no such file', file=sys.stderr)\nsys.exit(3)\n"
REPORTS_AND_CARRIES_ON = """\
import sys, traceback
def step():
    raise NotImplementedError("TODO: the step")
try:
    step()
except NotImplementedError:
    print("internal error in step (reported once; the program carries on):", file=sys.stderr)
    traceback.print_exc()
sys.stderr.flush()
sys.stdin.read()     # and lives on, until the test ends
"""
WAITS = "import sys\nprint('waiting', file=sys.stderr, flush=True)\nsys.stdin.read()\n"


def roles(monkeypatch, tmp_path, **sources: str) -> None:
    """Let the stand-ins play the roles: lab1_tcp.server=..., lab1_tcp.client=..."""
    overrides = []
    for role, source in sources.items():
        path = tmp_path / f"{role}.py"
        path.write_text(source, encoding="utf-8")
        overrides.append(f"lab1_tcp.{role}={path}")
    monkeypatch.setenv(ROLE_OVERRIDES_VARIABLE, ",".join(overrides))


@pytest.mark.points(1)
def test_a_wait_on_a_role_that_exited_ends_at_once_leading_with_its_last_words(monkeypatch, tmp_path):
    roles(monkeypatch, tmp_path, client=EXITS_EARLY)
    with Processes() as processes:
        client = processes.start("lab1_tcp.client")
        with pytest.raises(AssertionError) as failure:
            client.wait_for_stdout(r"^a line it never prints$", timeout=600)
    lines = str(failure.value).splitlines()
    assert lines[:3] == ["lab1_tcp.client exited with code 3; its last stderr lines:",
                         "    cannot go on: no such file",
                         "lab1_tcp.client: waited for 1 stdout line(s) /^a line it never prints$/"], lines


@pytest.mark.points(1)
def test_a_traceback_in_another_role_ends_the_wait_and_leads_the_failure(monkeypatch, tmp_path):
    roles(monkeypatch, tmp_path, server=REPORTS_AND_CARRIES_ON, client=WAITS)
    with Processes() as processes:
        client = processes.start("lab1_tcp.client")
        client.wait_for_stderr("^waiting$")     # before the server's traceback, which would end this wait too
        server = processes.start("lab1_tcp.server")
        # The server lives on after its report; the client waits on it in vain.
        with pytest.raises(AssertionError) as failure:
            client.wait_for_stdout(r"^the server's answer$", timeout=600)
        assert server.process.poll() is None
        with pytest.raises(AssertionError) as exit_failure:
            client.wait_exit(timeout=600)
    for message in (str(failure.value), str(exit_failure.value)):
        lines = message.splitlines()
        assert lines[0] == "lab1_tcp.server failed: NotImplementedError: TODO: the step", lines
        assert lines[1].strip() == f'File "{tmp_path / "server.py"}", line 3, in step', lines
        assert lines[2].strip() == 'raise NotImplementedError("TODO: the step")', lines
    assert str(failure.value).splitlines()[3] == "lab1_tcp.client: waited for 1 stdout line(s) /^the server's answer$/"


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(300)
def test_the_starters_lab1_client_fails_its_first_test_naming_its_first_todo(tmp_path):
    """One black-box test against the starter's Lab 1 client (the kit's
    server): its report's reason leads with the first TODO's error."""
    source = (ROOT / "lab1_tcp" / "client.py").read_text(encoding="utf-8")
    starter = starter_python(source, "lab1_tcp/client.py")
    copy = tmp_path / "client.py"
    copy.write_text(starter, encoding="utf-8")
    # The first TODO of the file is the first a client meets: connecting.
    number, line = next((number, line) for number, line in enumerate(starter.splitlines(), 1)
                        if line.strip().startswith("raise NotImplementedError("))
    todo = ast.literal_eval(line.strip()[len("raise NotImplementedError("):-1])
    report = tmp_path / "grades.json"
    env = {key: value for key, value in os.environ.items() if key != ROLE_OVERRIDES_VARIABLE}
    completed = run_nested(
        [sys.executable, "-m", "pytest", "tests/test_lab1.py", "-k", "test_messages_are_delivered_both_ways_verbatim",
         "--role", f"lab1_tcp.client={copy}", "--grade-json", str(report), "-p", "no:cacheprovider", "-q",
         "-p", "no:hypothesispytest"],
        timeout=240, cwd=ROOT, env=env)
    assert report.exists(), completed.stdout + completed.stderr
    [result] = json.loads(report.read_text(encoding="utf-8"))["tests"].values()
    assert result["outcome"] == "failed", result
    assert result["reason"] == f"call: AssertionError: lab1_tcp.client failed: NotImplementedError: {todo}", result
    # In full: the error, then the frame that raised it, then what the test awaited.
    details = "\n".join(line.removeprefix("E").strip() for line in completed.stdout.splitlines())
    cause, frame = f"lab1_tcp.client failed: NotImplementedError: {todo}", f'File "{copy}", line {number}, in '
    awaited = "lab1_tcp.client: waited for 1 stderr line(s) /^logged in as alice$/"
    assert -1 < details.find(cause) < details.find(frame) < details.find(awaited), details


# A role that lives on whatever its stdin does, as a starter's client spinning on a TODO
# before its login does (typed lines wait for the login): only a kill ends it. It tells
# the test its process ID first.
LIVES_ON = """\
import os, socket, threading
with socket.create_connection(("127.0.0.1", int(os.environ["CALL_BACK_PORT"]))) as sock:
    sock.sendall(str(os.getpid()).encode())
threading.Event().wait()
"""
# The test of a nested run: it starts that role and waits on it in vain.
WAITS_ON_ITS_ROLE = """\
import os
from pathlib import Path
from tests.procs import Processes

def test_waits_on_its_role():
    try:
        with Processes() as processes:
            role = processes.start("lab1_tcp.client")
            role.wait_for_stdout("^a line it never prints$", timeout=600)
    finally:
        Path(os.environ["TORN_DOWN"]).write_text("its roles were stopped")
"""


def ends_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has ended, or ends within ``seconds``. On Linux a
    pidfd becomes readable when the process ends; elsewhere it is looked for
    every WATCH_INTERVAL_SECONDS."""
    deadline = time.monotonic() + seconds
    try:
        if hasattr(os, "pidfd_open"):
            descriptor = os.pidfd_open(pid)
            try:
                return bool(select.select([descriptor], [], [], seconds)[0])
            finally:
                os.close(descriptor)
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            select.select([], [], [], WATCH_INTERVAL_SECONDS)
        return False
    except ProcessLookupError:
        return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX: the grader interrupts a test with SIGALRM, and the test's "
                                            "pytest run with SIGINT; on Windows a run is killed")
@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(180)
def test_a_test_interrupted_by_a_todo_while_its_pytest_run_waits_leaves_no_role_of_that_run_running(
        monkeypatch, tmp_path):
    """tests/test_attach.py runs a pytest of its own, whose test starts a
    client. On the starter, the outer test's server reaches a TODO meanwhile,
    and the grader interrupts the outer test; the run's client must not live
    on (orphaned, it would spin on its own TODO until the machine restarts)."""
    roles(monkeypatch, tmp_path, server=REPORTS_AND_CARRIES_ON, client=LIVES_ON)
    (tmp_path / "test_inner.py").write_text(WAITS_ON_ITS_ROLE, encoding="utf-8")
    torn_down = tmp_path / "torn-down"
    inner_pids: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as listener, Processes() as processes:
        listener.settimeout(DEADLINE_SECONDS * 3)   # a pytest's start, on a busy machine

        def interrupt_once_the_inner_role_runs() -> None:
            connection, _ = listener.accept()
            with connection:
                inner_pids.append(int(connection.makefile().read()))
            processes.start("lab1_tcp.server")   # its traceback interrupts the test, as a TODO of the starter does

        threading.Thread(target=interrupt_once_the_inner_role_runs, daemon=True).start()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TORN_DOWN": str(torn_down),
               "CALL_BACK_PORT": str(listener.getsockname()[1])}
        try:
            completed = run_nested([sys.executable, "-m", "pytest", "test_inner.py", "-q", "-p", "no:cacheprovider",
                                    "-p", "no:hypothesispytest"], timeout=DEADLINE_SECONDS * 6, cwd=tmp_path, env=env)
        except AssertionError as interrupted:
            reason = str(interrupted)
        else:
            raise AssertionError("the run ended before the test was interrupted:\n"
                                 + completed.stdout + completed.stderr)
    assert reason.startswith("lab1_tcp.server failed: NotImplementedError: TODO: the step"), reason
    [pid] = inner_pids
    assert ends_within(pid, DEADLINE_SECONDS), f"the run's role (process {pid}) lives on"
    assert torn_down.read_text(encoding="utf-8") == "its roles were stopped"   # by its test, after a SIGINT
