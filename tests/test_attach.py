"""``pytest --attach HOST:PORT``: the black-box tests against a server that a
student started by hand (under a debugger, say), instead of one of their own.

Here the "hand-started" server is a real server process this test starts
(its output in files, or kept to itself); a pytest subprocess then runs a
few tests with --attach at it.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.procs import (
    ATTACH_VARIABLE, ROOT, AttachedServer, Attachment, Processes, create_test_env_file, free_port, run_nested,
)

LAB2_DM = "test_dm_reaches_only_its_recipient"
LAB2_OWN_SETTINGS = "test_breaking_a_limit_gets_a_clear_error_to_that_client_only"
LAB1_WRONG_KEY = "test_wrong_key_fails_the_handshake_with_a_clear_message"
LAB1_OWN_OPTIONS = "test_out_of_file_descriptors_the_server_says_so_once_and_recovers"


def free_udp_port() -> int:
    """A UDP port nobody uses now (see procs.free_port)."""
    return free_port(socket.SOCK_DGRAM)


def run_attached(tmp_path, test_file: str, keyword: str, port: int, env_file, *options: str) -> dict:
    """Run ``pytest test_file -k keyword --attach 127.0.0.1:port``; return its --grade-json report."""
    report = tmp_path / "grades.json"
    env = dict(os.environ)
    env.pop(ATTACH_VARIABLE, None)
    completed = run_nested(
        [sys.executable, "-m", "pytest", test_file, "-k", keyword, "-p", "no:cacheprovider", "-q",
         "-p", "no:hypothesispytest",     # the black-box tests use none of it: a second of CPU saved a run
         "--attach", f"127.0.0.1:{port}", "--attach-env", str(env_file), "--grade-json", str(report), *options],
        timeout=200, cwd=ROOT, env=env)
    assert report.exists(), completed.stdout + completed.stderr
    return {nodeid.split("::")[-1]: result for nodeid, result in json.loads(report.read_text())["tests"].items()}


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(240)
def test_attach_runs_a_lab2_test_against_a_server_started_by_hand_and_skips_one_needing_its_own(tmp_path):
    env_file = create_test_env_file(tmp_path / "by-hand.env")
    with open(env_file, "a", encoding="utf-8") as settings:      # a broadcast port no other test uses
        settings.write(f"BROADCAST_PORT={free_udp_port()}\n")
    with Processes() as processes:
        server = processes.start("lab2_udp.server", "--headless", "--port", "0", "--env", str(env_file),
                                 "--db", str(tmp_path / "by-hand.db"))
        port = int(server.wait_for_stderr(r"^listening on 127\.0\.0\.1:(\d+)").group(1))
        results = run_attached(tmp_path, "tests/test_lab2.py", f"{LAB2_DM} or {LAB2_OWN_SETTINGS}", port, env_file)
        assert results[LAB2_DM]["outcome"] == "passed", results
        for name in ("alice", "bob", "carol"):     # the test's members came to this server
            server.wait_for_stdout(rf"^#\d+ \* {name} joined$")
    skipped = results[LAB2_OWN_SETTINGS]
    assert skipped["outcome"] == "skipped", results
    assert "--attach: this test starts its server with options or settings of its own" in skipped["reason"]


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(240)
def test_attach_reads_a_hand_started_lab1_servers_output_from_its_files_and_the_test_passes(tmp_path):
    env_file = create_test_env_file(tmp_path / "by-hand.env")
    out, err = tmp_path / "server.out", tmp_path / "server.err"
    out.touch()
    err.touch()
    # Started as a student would in a shell: python -m lab1_tcp.server ... >>server.out 2>>server.err
    screen = AttachedServer("lab1_tcp.server", Attachment("127.0.0.1", 0, env_file, out, err))
    with open(out, "ab") as stdout, open(err, "ab") as stderr, subprocess.Popen(
            [sys.executable, "-m", "lab1_tcp.server", "--headless", "--host", "127.0.0.1", "--port", "0",
             "--env", str(env_file), "--db", str(tmp_path / "by-hand.db")],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr) as server:
        try:
            port = int(screen.wait_for_stderr(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
            results = run_attached(tmp_path, "tests/test_lab1.py", f"{LAB1_WRONG_KEY} or {LAB1_OWN_OPTIONS}",
                                   port, env_file, "--attach-stdout", str(out), "--attach-stderr", str(err))
            # The run's verdicts first: a run that failed says why, instead of
            # this test waiting for server lines that will never come.
            wrong_keys = {name: result for name, result in results.items() if name.startswith(LAB1_WRONG_KEY)}
            assert len(wrong_keys) == 2 and {result["outcome"] for result in wrong_keys.values()} == {"passed"}, \
                results
            skipped = results[LAB1_OWN_OPTIONS]
            assert skipped["outcome"] == "skipped" and "options or settings of its own" in skipped["reason"], results
            # Both wrong keys reached this server, which dropped each handshake and let alice in after.
            screen.wait_for_stderr(r"dropped: handshake failed", count=2)
            screen.wait_for_stderr(r"^alice logged in from", count=2)
        finally:
            screen.kill()
            server.kill()


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.deadline(240)
def test_attach_runs_a_lab1_test_until_it_reads_a_server_output_it_cannot_see_then_skips_saying_so(tmp_path):
    env_file = create_test_env_file(tmp_path / "by-hand.env")
    with Processes() as processes:
        server = processes.start("lab1_tcp.server", "--headless", "--host", "127.0.0.1", "--port", "0",
                                 "--env", str(env_file), "--db", str(tmp_path / "by-hand.db"))
        port = int(server.wait_for_stderr(r"^listening on 127\.0\.0\.1:(\d+)$").group(1))
        results = run_attached(tmp_path, "tests/test_lab1.py", LAB1_WRONG_KEY, port, env_file)
        assert {result["outcome"] for result in results.values()} == {"skipped"}, results   # the verdicts first
        # Both wrong keys reached this server, which dropped each handshake.
        server.wait_for_stderr(r"dropped: handshake failed", count=2)
    for result in results.values():
        assert "--attach: this test reads the server's stderr (--attach-stderr FILE" in result["reason"]
        assert f"the test ran against 127.0.0.1:{port} until then" in result["reason"]
