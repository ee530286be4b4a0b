"""Run role scripts as processes and wait for their output, with deadlines.

The black-box tests of both labs drive the real programs through their
command-line contract: lines in on stdin, transcript lines out on stdout,
status on stderr, an exit code at the end. Nothing here sleeps: every wait
is a condition with a deadline, so a busy machine only makes a test slower,
never wrong, and a broken program fails with its output in the message.
Every program a test starts writes its keys to the test's key log, and its
ports are captured, so a failing test tells its wire story
(tests/wire_story.py).

    with Processes() as processes:
        server = processes.start("lab1_tcp.server", "--port", "0", "--headless")
        match = server.wait_for_stderr(r"listening on .*:(\\d+)")
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.config import create_env_file
from tests import wire_story

ROOT = Path(__file__).resolve().parents[1]
# Generous, because a loaded 2-core CI machine can be slow; a passing test
# never waits this long.
DEADLINE_SECONDS = 20.0
# A server's start: it hashes a dummy password first (common/accounts.py),
# which at the slow cost some tests set on purpose takes seconds of CPU, many
# more on a busy machine. A server that dies at its start still fails at once.
SERVER_START_SECONDS = 60.0
# With a server under a debugger (pytest --attach), a breakpoint may hold it
# for minutes: the waits of the test's own processes last this long instead.
ATTACHED_DEADLINE_SECONDS = 180.0
# Settings a developer may have exported in their shell; a test sets its own.
_SETTING_VARIABLES = (
    "CHAT_PSK", "SERVER_PRIVATE_KEY", "SERVER_PUBLIC_KEY", "SERVER_HOST", "LAB1_PORT",
    "LAB2_PORT", "BROADCAST_ADDR", "BROADCAST_PORT", "DB_PATH", "CHAT_PASSWORD",
)


def create_test_env_file(path: Path) -> Path:
    """A fresh .env with new keys and the cheapest Argon2id there is: the
    tests check the protocol, not the cost of a hash."""
    create_env_file(path)
    with open(path, "a", encoding="utf-8") as env_file:
        env_file.write("ARGON2_MEMORY_KIB=8\nARGON2_ITERATIONS=1\n")
    return path


# Grading a student's copy of a role file: "lab2_udp.client=/path/client.py,..."
# (pytest --role MODULE=PATH sets it; see tests/grading.py).
ROLE_OVERRIDES_VARIABLE = "CHAT_LAB_ROLES"


def role_overrides() -> dict[str, Path]:
    """The role modules replaced by files, from CHAT_LAB_ROLES."""
    pairs = (item.partition("=") for item in os.environ.get(ROLE_OVERRIDES_VARIABLE, "").split(",") if item)
    return {module: Path(path) for module, _, path in pairs}


def role_command(module: str, env: dict[str, str]) -> list[str]:
    """How to start a role: ``python -m module``, or the file that replaces it.
    A replacement file still imports the kit's common/, so the kit's folder
    goes on its PYTHONPATH (``env`` is changed in place)."""
    replacement = role_overrides().get(module)
    if replacement is None:
        return [sys.executable, "-m", module]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return [sys.executable, str(replacement)]


# Role processes under a simulation of Windows' sockets on Linux: set this
# variable to "windows" (for one Processes, or the whole run) and every role
# started here imports tests/winsim/sitecustomize.py first, which says what it
# simulates and what it does not.
SIMULATION_VARIABLE = "CHAT_LAB_SIMULATE"
WINSIM_FOLDER = ROOT / "tests" / "winsim"


def simulation_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the simulation's folder first on PYTHONPATH, if it asks for one."""
    if env.get(SIMULATION_VARIABLE) != "windows":
        return env
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(WINSIM_FOLDER), env.get("PYTHONPATH")]))}


# A server the student started by hand (pytest --attach HOST:PORT, see
# tests/grading.py): its address, its .env, and the files its stdout and
# stderr go to if the student sent them to files, as JSON.
ATTACH_VARIABLE = "CHAT_LAB_ATTACH"
# A file gives no signal when another process appends to it: a follower
# looks again this often, as ``tail -f`` does.
FOLLOW_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class Attachment:
    host: str
    port: int
    env_file: Path
    stdout: Path | None = None
    stderr: Path | None = None

    def to_json(self) -> str:
        return json.dumps({key: str(value) if isinstance(value, Path) else value
                           for key, value in dataclasses.asdict(self).items()})


def attachment() -> Attachment | None:
    """The server given by pytest --attach, or None."""
    value = os.environ.get(ATTACH_VARIABLE)
    if not value:
        return None
    fields = json.loads(value)
    return Attachment(fields["host"], fields["port"], Path(fields["env_file"]),
                      *(Path(fields[stream]) if fields[stream] else None for stream in ("stdout", "stderr")))


def parse_attach(value: str) -> tuple[str, int]:
    """``HOST:PORT`` of --attach, checked: a loopback address, as every test uses."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]")    # [::1]:5050
    try:
        usable = ipaddress.ip_address(host).is_loopback and 0 < int(port) < 65536
    except ValueError:
        usable = False
    if not usable:
        raise ValueError(f"--attach {value}: expected HOST:PORT with a loopback HOST, e.g. 127.0.0.1:5050")
    return host, int(port)


def _wait_seconds(timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    return ATTACHED_DEADLINE_SECONDS if attachment() else DEADLINE_SECONDS


# A TODO region not written yet (the students' starter) raises NotImplementedError in its
# role, which may live on. A wait of this module then ends at once; a test that waits on
# something else (a raw socket of its own, a subprocess) is interrupted this long after
# the traceback, failing with it, instead of waiting out its deadline: the grader's
# SIGALRM handler (tests/grading.py) raises the reason, in the main thread, where tests run.
TODO_GRACE_SECONDS = 1.0
_TODO_ERROR = "NotImplementedError"


class _TodoAlarm:
    """The one pending interrupt of the test that runs: armed by a role's reader
    thread, fired in the main thread only while the grader listens (its handler
    is installed, during a test's setup and call), cancelled when a wait of this
    module has told the test or when the test's roles are stopped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._sent: str | None = None   # the reason of a signal sent, which a cancel cannot take back
        self._due = False
        self._listening = False
        self._timer: threading.Timer | None = None

    def arm(self, reason: str) -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason, self._due = reason, False
            self._timer = threading.Timer(TODO_GRACE_SECONDS, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._due = True
            self._signal_if_due()

    def _signal_if_due(self) -> None:   # with the lock held: the grader cannot stop listening meanwhile
        if self._due and self._listening and self._reason is not None:
            self._sent = self._reason
            signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)

    def listen(self, listening: bool) -> bool:
        """The grader's SIGALRM handler is installed (True) or about to go; the previous state."""
        with self._lock:
            previous, self._listening = self._listening, listening
            self._signal_if_due()
            return previous

    def take(self) -> str | None:
        """The reason to raise, once; None if nothing is pending."""
        with self._lock:
            reason = self._sent or self._reason
            self._reason, self._sent, self._due = None, None, False
            return reason

    def cancel(self) -> None:
        with self._lock:
            self._reason, self._due = None, False
            if self._timer is not None:
                self._timer.cancel()


TODO_ALARM = _TodoAlarm()


class _Screen:
    """What a test sees of a role: its stdout and stderr lines, and waits on them.

    The roles a test starts together share one condition, so a wait on one of
    them wakes when any of them says something or ends. A wait ends at once,
    failing, when the role it waits on has ended without saying what was
    awaited, or when any role of the test has printed a traceback (a crash, a
    TODO's NotImplementedError, or an error the role reported and carried on
    after): the rest of the test could only wait out its deadline. The failure
    then leads with that traceback's last lines, which name the file, the line
    and the error."""

    name: str
    stdout_lines: list[str]
    stderr_lines: list[str]
    _changed: threading.Condition
    _group: list[_Screen]

    def ended(self) -> bool:
        """Whether the role has closed its stdout and stderr (it exited): its
        lines are then all in, and will never change."""
        return False

    def exit_note(self) -> str:
        return "ended"

    def stderr_so_far(self) -> list[str]:
        """The stderr lines read so far (an attached server's, without skipping)."""
        return self.stderr_lines

    def wait_until(self, condition, what: str, timeout: float | None = None):
        """Wait until ``condition()`` is truthy and return its value; fail the
        test with the cause, ``what`` and the output so far if a role of the
        test crashed, if this one ended first, or if the deadline passes."""
        __tracebackhide__ = True   # pytest shows the test's line, and the message that follows
        timeout = _wait_seconds(timeout)
        with self._changed:
            result = self._changed.wait_for(lambda: condition() or self._cut_short(), timeout)
        if isinstance(result, _CutShort):
            TODO_ALARM.cancel()   # the test is told now
            raise AssertionError(result.message(f"{self.name}: waited for {what}", self))
        if not result:
            raise AssertionError(f"{self.name}: timed out waiting for {what}\n{self.output()}")
        return result

    def _cut_short(self, ended_too: bool = True) -> _CutShort | None:
        """Why waiting on longer is pointless, or None. Called with the lock held."""
        for screen in [self, *(other for other in self._group if other is not self)]:
            lines = _traceback_lines(screen.stderr_so_far(), screen.ended())
            if lines:
                return _CutShort(screen, lines)
        if ended_too and self.ended():
            return _CutShort(self, self.stderr_lines[-LAST_WORDS_LINES:])
        return None

    def wait_for_stdout(self, pattern: str, count: int = 1,
                        timeout: float | None = None) -> re.Match:
        """Wait until ``count`` stdout lines match the regular expression
        ``pattern``; return the match in the last of them."""
        __tracebackhide__ = True
        return self.wait_until(lambda: _search(pattern, self.stdout_lines, count),
                               f"{count} stdout line(s) /{pattern}/", timeout)

    def wait_for_stderr(self, pattern: str, count: int = 1,
                        timeout: float | None = None) -> re.Match:
        """Like wait_for_stdout, on stderr."""
        __tracebackhide__ = True
        return self.wait_until(lambda: _search(pattern, self.stderr_lines, count),
                               f"{count} stderr line(s) /{pattern}/", timeout)

    def receive_datagram(self, sock: socket.socket, size: int,
                         timeout: float | None = None) -> tuple[bytes, tuple]:
        """``sock.recvfrom(size)`` of a datagram this role should send, with the
        same deadline and the same early end as wait_until: a socket gives no
        signal when a process dies, so it is looked at in short slices, the
        test's roles checked between them."""
        __tracebackhide__ = True
        deadline = time.monotonic() + _wait_seconds(timeout)
        what = f"a datagram on {sock.getsockname()}"
        while True:
            with self._changed:
                cut_short = self._cut_short()
            if cut_short:
                TODO_ALARM.cancel()
                raise AssertionError(cut_short.message(f"{self.name}: waited for {what}", self))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: timed out waiting for {what}\n{self.output()}")
            readable, _, _ = select.select([sock], [], [], min(left, WATCH_INTERVAL_SECONDS))
            if readable:
                return sock.recvfrom(size)

    def output(self) -> str:
        with self._changed:
            return ("--- stdout\n" + "\n".join(self.stdout_lines)
                    + "\n--- stderr\n" + "\n".join(self.stderr_lines))


# How often receive_datagram looks at the test's roles while it waits on a socket.
WATCH_INTERVAL_SECONDS = 0.1
# How many of its last stderr lines a role that ended early leads its failure with.
LAST_WORDS_LINES = 8
_TRACEBACK_START = "Traceback (most recent call last):"
# Lines of a traceback that do not end it: frames are indented, and chained
# exceptions are joined by these sentences and blank lines.
_TRACEBACK_JOINS = ("During handling of the above exception", "The above exception was the direct cause", "")


def _traceback_lines(lines: list[str], ended: bool) -> list[str] | None:
    """The first complete traceback in ``lines`` (from its start to its error
    line), or None. A role that carries on after reporting an error prints its
    traceback in one go; a role that died has said all it will say."""
    try:
        start = lines.index(_TRACEBACK_START)
    except ValueError:
        return None
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if not line[:1].isspace() and not line.startswith(_TRACEBACK_START) and line not in _TRACEBACK_JOINS \
                and not line.startswith(_TRACEBACK_JOINS[:2]):
            return lines[start:index + 1]
    return lines[start:] if ended else None


@dataclass(frozen=True)
class _CutShort:
    """A wait that ended early: the role that caused it and its last words."""
    screen: _Screen
    last_words: list[str]

    def message(self, awaited: str, waiter: _Screen) -> str:
        """The cause first (the error, then the frame that raised it), then what
        was awaited, then the output of the roles concerned."""
        if self.last_words and self.last_words[0] == _TRACEBACK_START:
            error = self.last_words[-1]
            # The innermost frame: its "File ..., line N, in function" and its source line.
            frames = [index for index, line in enumerate(self.last_words) if line.lstrip().startswith('File "')]
            where = self.last_words[frames[-1]:frames[-1] + 2] if frames else []
            head = [f"{self.screen.name} failed: {error}", *where]
        else:
            head = [f"{self.screen.name} {self.screen.exit_note()}; its last stderr lines:",
                    *(f"    {line}" for line in self.last_words or ["(none)"])]
        screens = [self.screen] if self.screen is waiter else [self.screen, waiter]
        outputs = [f"=== {screen.name}\n{screen.output()}" for screen in screens]
        return "\n".join([*head, awaited, *outputs])


class RoleProcess(_Screen):
    """One running role script, with its stdout and stderr collected line by line."""

    def __init__(self, module: str, args: list[str], env: dict[str, str],
                 prefix: list[str] | None = None, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 group: list[_Screen] | None = None, changed: threading.Condition | None = None) -> None:
        """``group`` and ``changed``: the other roles of the test and the
        condition they share (Processes passes them)."""
        self.name = module
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._changed = changed or threading.Condition()
        self._group = group if group is not None else [self]
        self.process = subprocess.Popen(
            [*(prefix or []), *role_command(module, env), *args], cwd=ROOT, env=env,
            stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout_lines), (self.process.stderr, self.stderr_lines))
            if stream is not None   # None: stdout was the test's own (Processes.start)
        ]
        self._open_streams = len(self._readers)   # ended() once each has reached its end
        for reader in self._readers:
            reader.start()

    def _collect(self, stream, lines: list[str]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            wire_story.watch_output_line(line)    # a port picked by the OS, before the test reads of it
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
            if lines is self.stderr_lines and line.startswith(_TODO_ERROR):
                traceback = _traceback_lines(list(lines), ended=False)
                if traceback and traceback[-1].startswith(_TODO_ERROR):
                    TODO_ALARM.arm(_CutShort(self, traceback).message("(the test was interrupted: "
                                                                      "nothing it waits on can come now)", self))
        with self._changed:   # end of stream: wake waiters so they can fail fast
            self._open_streams -= 1
            self._changed.notify_all()

    def ended(self) -> bool:
        return self._open_streams == 0

    def exit_note(self) -> str:
        try:
            return f"exited with code {self.process.wait(DEADLINE_SECONDS)}"
        except subprocess.TimeoutExpired:
            return "closed its output"

    def send_line(self, text: str) -> None:
        """Write one line to the program's stdin."""
        self.send_bytes((text + "\n").encode("utf-8"))

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close_stdin(self) -> None:
        self.process.stdin.close()

    def wait_exit(self, timeout: float | None = None) -> int:
        """Wait for the program to end and return its exit code; fail at once
        if a role of the test printed a traceback (and this one lives on)."""
        __tracebackhide__ = True
        deadline = time.monotonic() + _wait_seconds(timeout)
        with self._changed:   # the pipes close at exit: then every last line is in
            result = self._changed.wait_for(lambda: self.ended() or self._cut_short(ended_too=False),
                                            _wait_seconds(timeout))
        if isinstance(result, _CutShort):
            TODO_ALARM.cancel()
            raise AssertionError(result.message(f"{self.name}: waited for it to exit", self))
        try:
            return self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit\n{self.output()}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        # The readers end at the pipes' end of file. Closing a pipe while its
        # reader is still in read() would make that thread fail instead.
        for reader in self._readers:
            reader.join(DEADLINE_SECONDS)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:   # None: stdin was a file of the test's (Processes.start)
                try:
                    stream.close()
                except BrokenPipeError:   # stdin's unflushed last bytes (a test interrupted mid-write)
                    pass


def _search(pattern: str, lines: list[str], count: int) -> re.Match | None:
    matches = [match for match in map(re.compile(pattern).search, lines) if match]
    return matches[count - 1] if len(matches) >= count else None


class AttachedServer(_Screen):
    """A server the student started by hand, under a debugger perhaps (pytest
    --attach): the test reaches it over the network, as its clients do. Its
    terminal is the student's: the test reads its stdout and stderr only from
    the files the student sent them to (--attach-stdout, --attach-stderr).
    A test that needs more (to type into it, to read what was not sent to a
    file) stops there, skipped, saying why."""

    def __init__(self, module: str, attached: Attachment, group: list[_Screen] | None = None,
                 changed: threading.Condition | None = None) -> None:
        self.name = f"{module} at {attached.host}:{attached.port} (--attach)"
        self.host, self.port, self.env_file = attached.host, attached.port, attached.env_file
        self._changed = changed or threading.Condition()
        self._group = group if group is not None else [self]
        self._stopped = threading.Event()
        self._lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._files = {}
        for stream, path in (("stdout", attached.stdout), ("stderr", attached.stderr)):
            if path is not None:
                # From the file's start: the test sees all the server said, as if it had
                # started it itself; so each run wants a freshly started server.
                self._files[stream] = open(path, "rb")     # closed by kill(), at the test's end
        self._followers = [threading.Thread(target=self._follow, args=(file, self._lines[stream]), daemon=True)
                           for stream, file in self._files.items()]
        for follower in self._followers:
            follower.start()

    def _follow(self, file, lines: list[str]) -> None:
        partial = b""
        while not self._stopped.is_set():
            chunk = file.read()
            if not chunk:
                self._stopped.wait(FOLLOW_INTERVAL_SECONDS)
                continue
            *complete, partial = (partial + chunk).split(b"\n")
            with self._changed:
                lines.extend(line.decode("utf-8", errors="replace").rstrip("\r") for line in complete)
                self._changed.notify_all()

    def _terminal(self, use: str):
        pytest.skip(f"--attach: this test {use}, which a server started by hand keeps to itself (the test ran "
                    f"against {self.host}:{self.port} until then); run it without --attach")

    def _screen(self, stream: str) -> list[str]:
        if stream not in self._files:
            self._terminal(f"reads the server's {stream} (--attach-{stream} FILE names the file it goes to)")
        return self._lines[stream]

    @property
    def stdout_lines(self) -> list[str]:
        return self._screen("stdout")

    @property
    def stderr_lines(self) -> list[str]:
        return self._screen("stderr")

    def stderr_so_far(self) -> list[str]:
        return self._lines["stderr"]

    def output(self) -> str:
        with self._changed:
            return "\n".join(f"--- {stream} (from {file.name})\n" + "\n".join(self._lines[stream])
                             for stream, file in self._files.items())

    def send_line(self, *_args) -> None:
        self._terminal("types into the server's terminal")

    send_bytes = close_stdin = send_line

    def wait_exit(self, *_args) -> int:
        self._terminal("waits for the server to exit")

    def kill(self) -> None:
        """Stop reading its files; the server itself is the student's to stop."""
        self._stopped.set()
        for follower in self._followers:
            follower.join(DEADLINE_SECONDS)
        for file in self._files.values():
            file.close()


class Processes:
    """Starts role processes and kills every one of them on exit, pass or fail."""

    def __init__(self, base_env: dict[str, str] | None = None) -> None:
        self.base_env = base_env or {}
        self.started: list[_Screen] = []
        self._changed = threading.Condition()   # shared: see _Screen

    def start(self, module: str, *args: str, env: dict[str, str | None] | None = None,
              prefix: list[str] | None = None, stdin=subprocess.PIPE, stdout=subprocess.PIPE) -> RoleProcess:
        """Start ``python -m module args`` with the test's environment plus
        ``env``; a value of None removes that variable (DISPLAY, say). ``prefix``
        goes before the command: ``["ip", "netns", "exec", NAME]`` runs it on
        another host of a test LAN. ``stdin`` is a pipe the test writes into
        (send_line), unless a file or subprocess.DEVNULL is given; ``stdout`` a
        pipe read into stdout_lines, unless a file or a descriptor is given."""
        full_env = {key: value for key, value in os.environ.items()
                    if key not in _SETTING_VARIABLES}
        full_env.update(wire_story.process_environment(list(args)))   # its key log; the capture's ports
        full_env.update(self.base_env)
        full_env.update(env or {})
        process = RoleProcess(module, list(args),
                              simulation_environment({key: value for key, value in full_env.items()
                                                      if value is not None}),
                              prefix, stdin, stdout, self.started, self._changed)
        with self._changed:
            self.started.append(process)
        return process

    def attach(self, module: str, with_own_options: bool = False) -> AttachedServer:
        """The server given by --attach, in place of starting ``module``. A test
        that would start it with options or settings of its own, or start a
        second one, cannot use a server started by hand: it is skipped, saying so."""
        attached = attachment()
        why = ""
        if with_own_options:
            why = "starts its server with options or settings of its own"
        elif any(isinstance(process, AttachedServer) for process in self.started):
            why = "starts a second server, or restarts it"
        if why:
            pytest.skip(f"--attach: this test {why}, so it cannot use a server started by hand; "
                        f"run it without --attach")
        server = AttachedServer(module, attached, self.started, self._changed)
        wire_story.process_environment([])
        wire_story.watch_port(attached.port)
        with self._changed:
            self.started.append(server)
        return server

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc_info) -> None:
        TODO_ALARM.cancel()   # the test is over, whatever it waited on
        for process in self.started:
            process.kill()


# A run stopped early (run_nested) has this long after its SIGINT to tear down: to
# stop its roles and write its report, in well under a second when nothing hangs.
NESTED_GRACE_SECONDS = 10.0
# Set in the environment of a run that is a process group of its own (run_nested):
# the runs nested in it stay in its group.
NESTED_RUN_VARIABLE = "CHAT_LAB_NESTED_RUN"


def run_nested(command: list[str], timeout: float, **options) -> subprocess.CompletedProcess:
    """Run ``command`` (a pytest of the kit's, mostly) to its end and return it with
    its stdout and stderr as text, as ``subprocess.run(command, capture_output=True,
    text=True, timeout=timeout, **options)`` would; raise TimeoutExpired (with the
    output so far) past ``timeout``. What differs is how a run that is stopped
    early ends: past ``timeout``, or when the test that waits on it is
    interrupted (the grader's deadline or a role's TODO, tests/grading.py;
    Ctrl-C), the run gets a SIGINT first, which pytest turns into a
    KeyboardInterrupt: each test's ``with Processes()`` and fixtures then stop the
    roles they started, as after Ctrl-C. A kill comes only NESTED_GRACE_SECONDS
    later. ``subprocess.run`` kills at once, and the roles of a pytest killed
    mid-test live on, orphaned: a starter's client spinning on a TODO burns a
    core until the machine restarts.

    On POSIX, a run started by the main thread of a process that is not itself
    in such a run is a process group of its own: everything it starts, the runs
    nested in it included, stays in the group, and once the run is over (or its
    teardown hangs) the whole group gets SIGKILL, so nothing it left behind
    outlives it. A run started by another thread cannot be told of an interrupt
    (Python delivers signals to the main thread only): it stays in its caller's
    group, where a Ctrl-C in the terminal reaches it directly. On Windows there
    is no SIGINT to send to a child, nor a group to kill: the run is killed
    alone (TerminateProcess), without its teardown, and roles it had started
    may live on.

    The run's tests put their wire-story folders (key logs: secrets) in a
    folder made for the run, unless ``env`` names one. The run itself deletes
    them however it ends that Python can see, an interrupt included
    (tests/wire_story.py); a run killed mid-test (past its grace, or on
    Windows) cannot, and this folder goes once the run is over, with what
    the run left in it."""
    own_group = (os.name == "posix" and threading.current_thread() is threading.main_thread()
                 and NESTED_RUN_VARIABLE not in os.environ)
    given = options.get("env")
    env = dict(os.environ if given is None else given)
    if own_group:
        env[NESTED_RUN_VARIABLE] = "1"
    stories = None
    if wire_story.FOLDER_VARIABLE not in env:
        stories = env[wire_story.FOLDER_VARIABLE] = tempfile.mkdtemp(prefix="nested-run-wire-stories-")
    options["env"] = env
    try:
        return _run_nested(command, timeout, own_group, options)
    finally:
        if stories is not None:
            shutil.rmtree(stories, ignore_errors=True)


def _run_nested(command: list[str], timeout: float, own_group: bool, options: dict) -> subprocess.CompletedProcess:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=own_group, **options)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = _stop_nested(process, own_group)
        raise subprocess.TimeoutExpired(command, timeout, stdout, stderr) from None
    except BaseException:   # the test was interrupted while it waited: the run goes too, first
        _stop_nested(process, own_group)
        raise
    finally:
        if own_group:
            _kill_group(process)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _stop_nested(process: subprocess.Popen, own_group: bool) -> tuple[str, str]:
    """SIGINT, a grace for the teardown, then a kill (see run_nested); what it wrote."""
    output = "", ""
    try:
        if os.name == "posix":
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=NESTED_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass   # its teardown hangs: the kill below ends it
    finally:   # also when a second interrupt cuts the grace short
        if process.poll() is None:
            if own_group:
                _kill_group(process)
            process.kill()
            output = process.communicate()
    return output


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:   # nothing of the run is left: the usual case
        pass


def has_ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (some containers have no IPv6)."""
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free now, below the OS's range of ephemeral ports
    (32768-60999 on Linux): a port the OS hands out for port 0 may go, a moment
    later, to another program's outgoing connection or unbound UDP socket,
    before the test's program gets to bind it."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def assert_heard_the_room_by_datagram(client: RoleProcess) -> None:
    """After a Lab 2 client's clean exit: it heard the room by datagram, not only by
    repair (its exit line counts some opened), and never 1.5 s without one (no deaf warning)."""
    opened = int(re.search(r"^datagrams: (\d+) opened", client.stderr_lines[-2]).group(1))
    assert opened > 0, client.output()
    assert not any("no room datagram" in line for line in client.stderr_lines), client.output()


def unopenable_database(folder: Path, problem: str) -> tuple[Path, str]:
    """A --db a server cannot open, and the words its one-line refusal must give:
    a file in a folder that does not exist, or a file that is not a database."""
    if problem == "missing folder":
        return folder / "no such folder" / "chat.db", "does not exist"
    database = folder / "notes.txt"
    database.write_text("these are my notes, not a database\n" * 100)
    return database, "file is not a database"
