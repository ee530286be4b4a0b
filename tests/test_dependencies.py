"""What the servers say about the cryptography they run on.

The kit installs with any cryptography from 45 (pyproject.toml), so that clients
install from a wheel on 32-bit Windows and Intel Macs, where 49 and later have
none. A server runs on those older releases too, but they hold Python's GIL for
a whole password hash, so it says so, once, at start (docs/instructor.md).

The test makes the server believe it runs on cryptography 49.0.0: a
sitecustomize.py on its PYTHONPATH, which Python imports before anything else,
changes the version the package reports once its compiled part is loaded. The
code is the installed one.
"""
from __future__ import annotations

import re
import socket

import pytest

from tests.procs import Processes, create_test_env_file, free_port

OLD_RELEASE = "49.0.0"
WARNING = rf"^warning: cryptography {re.escape(OLD_RELEASE)} holds Python's GIL while it hashes a password"


def start_server(processes: Processes, module: str, tmp_path, release: str | None):
    """Start a server on its own files; with ``release``, reporting that cryptography version."""
    env = {}
    if release:
        fake = tmp_path / "fake-release"
        fake.mkdir()
        # The binding checks, once, that the package's version is its compiled part's: load it first.
        (fake / "sitecustomize.py").write_text("import cryptography.hazmat.bindings.openssl.binding\n"
                                               f"import cryptography\ncryptography.__version__ = {release!r}\n")
        env["PYTHONPATH"] = str(fake)
    env_file = create_test_env_file(tmp_path / ".env")
    lab2 = ["--broadcast-addr", "127.255.255.255", "--broadcast-port", str(free_port(socket.SOCK_DGRAM))]
    server = processes.start(module, "--host", "127.0.0.1", "--port", "0", "--env", str(env_file),
                             "--db", str(tmp_path / "chat.db"), "--headless",
                             *(lab2 if module.startswith("lab2") else []), env=env)
    server.wait_for_stderr(r"^listening on 127\.0\.0\.1:\d+")
    return server


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("module", ["lab1_tcp.server", "lab2_udp.server"])
def test_a_server_on_cryptography_before_50_starts_and_warns_once_that_logins_will_stall(tmp_path, module):
    with Processes() as processes:
        server = start_server(processes, module, tmp_path, OLD_RELEASE)
        warning = server.wait_for_stderr(WARNING)
        assert "pip install --upgrade 'cryptography>=50'" in warning.string, server.output()
        server.send_line("/quit")
        assert server.wait_exit() == 0, server.output()
        assert sum(line.startswith("warning: cryptography") for line in server.stderr_lines) == 1, server.output()


@pytest.mark.network
@pytest.mark.points(1)
@pytest.mark.parametrize("module", ["lab1_tcp.server", "lab2_udp.server"])
def test_a_server_on_cryptography_50_or_newer_says_nothing_of_it(tmp_path, module):
    with Processes() as processes:
        server = start_server(processes, module, tmp_path, "50.0.0")
        server.send_line("/quit")
        assert server.wait_exit() == 0, server.output()
        assert not any("cryptography" in line for line in server.stderr_lines), server.output()
