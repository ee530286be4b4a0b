"""The key log and the wire story: a failing black-box test shows what
crossed the wire, decrypted with the keys its programs logged.

The decoding is checked without sockets, on bytes made by real sessions and
a real datagram sealer and cut into TCP segments by hand; the whole story on
a pytest run of a test that fails on purpose; the key log of a role started
with ``--keylog`` on a real capture.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import keylog, noise
from common.errors import ProtocolError
from common.framing import DatagramSealer
from common.messages import ChatMessage, EventKind, LoginAccepted, Register, RoomBatch, RoomEvent, encode
from common.session import SecureSession
from tests.procs import DEADLINE_SECONDS, ROOT, Processes, create_test_env_file, free_port, run_nested
from tests.raw_peer import receive_until, register_raw
from tests.test_lab1 import role_module
from tests import wire_story
from tests.wire_capture import ACK, SYN, TCP, UDP, Capture, CaptureUnavailable, Packet, parse_ip_packet
from tests.wire_story import tell

PASSWORD = "correct horse battery"
CLIENT, SERVER = ("127.0.0.1", 40122), ("127.0.0.1", 5001)


@pytest.fixture
def key_log_file(tmp_path):
    """This process's keys go to a file for the length of one test."""
    path = tmp_path / "keys.log"
    keylog.open_key_log(str(path))
    yield path
    keylog.close_key_log()


def segments(data: bytes, source, destination, first_sequence: int, start_index: int,
             size: int) -> list[Packet]:
    """``data`` as the TCP segments of one direction: a SYN, then pieces of
    ``size`` bytes, each piece sent twice (a retransmission the story must
    drop), every other pair of pieces arriving in the wrong order."""
    pieces = []
    sequence = first_sequence + 1
    for offset in range(0, len(data), size):
        pieces.append((sequence % 2**32, data[offset:offset + size]))
        sequence += size
    for at in range(0, len(pieces) - 1, 4):
        pieces[at], pieces[at + 1] = pieces[at + 1], pieces[at]
    sent = [(first_sequence, b"", SYN)] + [(number, piece, ACK) for number, piece in pieces for _copy in range(2)]
    return [Packet(start_index + index, TCP, source, destination, piece, number, flags)
            for index, (number, piece, flags) in enumerate(sent)]


# --- The key log's format -------------------------------------------------------------------

@pytest.mark.points(1)
def test_key_log_lines_read_back_and_lines_it_does_not_know_are_skipped():
    ephemeral, sending, receiving, room = (bytes([value]) * 32 for value in (1, 2, 3, 4))
    text = ("# a comment\n\n" + keylog.session_line(ephemeral, sending, receiving)
            + keylog.room_line(1, room) + keylog.room_line(1, bytes(32)) + keylog.room_line(1, room)
            + "CLIENT_RANDOM 00 11\nNOISE 0102\nROOM x " + room.hex() + "\nROOM 2 " + room.hex()[:40])
    assert keylog.session_line(ephemeral, sending, receiving) == \
        f"NOISE {'01' * 32} {'02' * 32} {'03' * 32}\n"
    log = keylog.parse(text)
    assert log.sessions == {ephemeral: (sending, receiving)}
    assert log.room_keys == {1: [room, bytes(32)]}    # two server runs may both have an epoch 1
    with pytest.raises(ProtocolError):
        keylog.room_line(1, b"short")


@pytest.mark.points(1)
def test_chat_keylog_switches_the_log_on_and_nothing_is_written_without_it(tmp_path, monkeypatch):
    path = tmp_path / "keys.log"
    monkeypatch.delenv(keylog.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(keylog, "_environment_read", False)
    logged_conversation()                              # no --keylog, no CHAT_KEYLOG: nothing is written
    assert keylog._current_writer() is None
    monkeypatch.setenv(keylog.ENVIRONMENT_VARIABLE, str(path))
    monkeypatch.setattr(keylog, "_environment_read", False)
    try:
        upstream, _ = logged_conversation()
    finally:
        keylog.close_key_log()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600    # a secret: its owner's only
    text = path.read_text()
    assert text.startswith("# chat lab kit key log: anyone who holds this file can read")
    assert list(keylog.parse(text).sessions) == [upstream[2:34]]   # named by record 1's ephemeral key


@pytest.mark.points(1)
@pytest.mark.parametrize("module", ["lab1_tcp.server", "lab1_tcp.client", "lab2_udp.server", "lab2_udp.client"])
def test_every_role_takes_keylog_and_opens_the_file_as_it_reads_its_options(tmp_path, module):
    path = tmp_path / "keys.log"
    try:
        args = role_module(module).parse_args(["--name", "alice", "--keylog", str(path)])
        keylog.export_room_key(1, bytes(32))
    finally:
        keylog.close_key_log()
    assert args.keylog.path == str(path)
    assert keylog.parse(path.read_text()).room_keys == {1: [bytes(32)]}


# --- Decoding a capture ------------------------------------------------------------------------

def logged_conversation() -> tuple[bytes, bytes]:
    """A real session pair, in memory: the bytes each way, keys in the log."""
    private_key, public_key = noise.generate_keypair()
    psk = os.urandom(32)
    client, server = SecureSession.client(psk, public_key), SecureSession.server(psk, private_key)
    upstream, downstream = bytearray(), bytearray()

    def move(sender, receiver, wire):
        data = bytes(sender.outgoing)
        sender.outgoing.clear()
        wire += data
        return receiver.receive(data)

    move(client, server, upstream)
    move(server, client, downstream)
    client.send(Register("ana", PASSWORD))
    client.send(ChatMessage("ana", "hello bob"))
    assert move(client, server, upstream) == [Register("ana", PASSWORD), ChatMessage("ana", "hello bob")]
    server.send(ChatMessage("server", "hi ana"))
    move(server, client, downstream)
    return bytes(upstream), bytes(downstream)


@pytest.mark.points(2)
def test_story_decrypts_each_record_with_the_logged_session_keys(key_log_file):
    upstream, downstream = logged_conversation()
    packets = (segments(upstream, CLIENT, SERVER, 2**32 - 5, 0, 7)          # wraps the sequence space
               + segments(downstream, SERVER, CLIENT, 1000, 1000, 1000))
    packets.sort(key=lambda packet: packet.index)
    keys = keylog.parse(key_log_file.read_text())
    assert len(keys.sessions) == 1    # both ends logged the same session: one entry
    story = tell(packets, keys)
    assert story[:3] == [
        "#1   client 127.0.0.1:40122 -> server :5001  connect",
        f"#2   client 127.0.0.1:40122 -> server :5001  record 50 B  handshake 1 (initiator's key "
        f"{upstream[2:6].hex()}...)",
        "#3   client 127.0.0.1:40122 -> server :5001  record 47 B  Register(name='ana', password=***)",
    ]
    assert "ChatMessage(sender='ana', text='hello bob')" in story[3]
    assert story[4:] == ["#5   server 127.0.0.1:5001 -> client :40122  record 50 B  handshake 2",
                         "#6   server 127.0.0.1:5001 -> client :40122  record 35 B  "
                         "ChatMessage(sender='server', text='hi ana')"]
    assert PASSWORD not in "\n".join(story)
    unknown = tell(packets, keylog.KeyLog())
    assert unknown[2].endswith("record 47 B  (encrypted, no key)")
    assert tell(packets, keys, max_lines=2) == ["... 4 earlier lines left out", *story[-2:]]


@pytest.mark.points(1)
def test_story_says_where_a_stream_stops_being_records_or_the_capture_lost_bytes():
    garbage = segments(b"\x00\x00garbage", CLIENT, SERVER, 7, 0, 100)
    assert tell(garbage, keylog.KeyLog())[1:] == [
        "#2   client 127.0.0.1:40122 -> server :5001  not a record: record length 0 is outside 1..16384; "
        "the rest of this direction is not decoded"]
    first, *_, lost = segments(bytes(4000), CLIENT, SERVER, 7, 0, 1000)[::2]   # only the SYN and the last piece
    assert tell([first, lost], keylog.KeyLog())[-1] == (
        "#2   client 127.0.0.1:40122 -> server :5001  (the capture missed some bytes here: later records "
        "are not shown)")


@pytest.mark.points(1)
def test_story_opens_room_datagrams_with_the_room_key_of_their_epoch(key_log_file):
    sealer = DatagramSealer(Ed25519PrivateKey.generate())
    sealer.set_room_key(3, os.urandom(32))
    batch = RoomBatch((RoomEvent(1, EventKind.JOIN, "ana", ""), RoomEvent(2, EventKind.SAY, "ana", "hi")), 2)
    datagram = sealer.seal(encode(batch))
    packet = Packet(1, UDP, ("127.0.0.1", 45000), ("127.255.255.255", 23456), datagram)
    keys = keylog.parse(key_log_file.read_text())
    keys.room_keys[3].insert(0, os.urandom(32))   # an earlier server run's epoch 3
    assert tell([packet], keys) == [
        f"#1   127.0.0.1:45000 -> 127.255.255.255:23456  datagram {len(datagram)} B  epoch 3 packet 0  "
        "RoomBatch(events=[#1 join ana, #2 say ana 'hi'], latest_seq=2)"]
    assert tell([packet], keylog.KeyLog())[0].endswith("version 1 epoch 3 packet 0  (encrypted, no key)")
    heartbeats = [Packet(2 + count, UDP, packet.source, packet.destination, sealer.seal(encode(RoomBatch((), 2))))
                  for count in range(3)]
    assert tell([packet, *heartbeats], keys)[1].endswith(
        "epoch 3 packets 1-3  RoomBatch(events=(), latest_seq=2)  (3 alike)")   # a quiet room, in one line


@pytest.mark.points(1)
def test_ip_packets_of_both_families_are_read_and_others_refused():
    tcp = struct.pack(">HHIIBBHHH", 40122, 5001, 77, 0, 5 << 4, ACK, 0, 0, 0) + b"data"
    ipv4 = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, TCP, 0,
                       bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2])) + tcp
    assert parse_ip_packet(ipv4, 9) == Packet(9, TCP, ("127.0.0.1", 40122), ("127.0.0.2", 5001), b"data", 77, ACK)
    udp = struct.pack(">HHHH", 45000, 23456, 8 + 3, 0) + b"abc"
    ipv6 = struct.pack(">IHBB16s16s", 6 << 28, len(udp), UDP, 64, bytes(15) + b"\1", bytes(15) + b"\1") + udp
    assert parse_ip_packet(ipv6) == Packet(0, UDP, ("::1", 45000), ("::1", 23456), b"abc")
    assert parse_ip_packet(ipv4[:30]) is None                          # cut short
    assert parse_ip_packet(ipv4[:9] + bytes([1]) + ipv4[10:]) is None  # ICMP


# --- The story of a failing test ---------------------------------------------------------------

FAILING_TEST = '''
import os

import pytest
from tests.procs import Processes, create_test_env_file

@pytest.mark.network
def test_bob_answers(tmp_path):
    env = create_test_env_file(tmp_path / ".env")
    with Processes() as processes:
        server = processes.start("lab1_tcp.server", "--host", "127.0.0.1", "--port", "0", "--env", str(env),
                                 "--db", str(tmp_path / "chat.db"), "--headless")
        port = server.wait_for_stderr(r"^listening on 127\\.0\\.0\\.1:(\\d+)$").group(1)
        client = processes.start("lab1_tcp.client", "--host", "127.0.0.1", "--port", port, "--name", "ana",
                                 "--register", "--env", str(env), "--headless",
                                 env={"CHAT_PASSWORD": os.environ["INNER_PASSWORD"]})
        client.wait_for_stderr("^logged in as ana$")
        client.send_line("hello bob")
        server.wait_for_stdout("^ana: hello bob$")
        assert "bob: hi ana" in server.stdout_lines, "bob never answered"
'''


def capture_available() -> bool:
    try:
        Capture().stop()
    except CaptureUnavailable:
        return False
    return True


def run_failing_test(tmp_path, prefix: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, str, str]:
    """Run FAILING_TEST in a pytest of its own (after ``prefix``); return the
    run, its terminal's wire story, and the story in the Gradescope output,
    after checking that the JSON report holds the same story."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(FAILING_TEST))
    results = tmp_path / "results.json"
    result = run_nested(
        [*prefix, sys.executable, "-m", "pytest", "-p", "tests.wire_story", "-p", "tests.grading",
         "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"),
         str(tmp_path / "test_inner.py"), "--grade-format", "gradescope", "--grade-output", str(results),
         "--grade-json", str(tmp_path / "grades.json")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "INNER_PASSWORD": PASSWORD},
        timeout=DEADLINE_SECONDS * 3)
    assert result.returncode == 1, result.stdout + result.stderr
    story = result.stdout.split(" wire story ")[1]
    (graded,) = json.loads((tmp_path / "grades.json").read_text())["tests"].values()
    assert graded["wire_story"] == story.split("\n", 1)[1].split("\n=====")[0] + "\n"
    assert graded["reason"].startswith("call: AssertionError: bob never answered")   # failed for its own reason
    output = json.loads(results.read_text())["tests"][0]["output"]
    assert PASSWORD not in result.stdout and PASSWORD not in output
    return result, story, output


@pytest.mark.network
@pytest.mark.points(3)
def test_a_failing_black_box_test_tells_what_crossed_the_wire(tmp_path):
    _, story, output = run_failing_test(tmp_path)
    assert "--- wire story" in output and "expected:" in output     # in the grade outputs too
    if not capture_available():
        assert "no capture: needs CAP_NET_RAW" in story
        return
    lines = story.splitlines()
    assert any(line.startswith("#1   client 127.0.0.1:") and line.endswith("connect") for line in lines)
    assert any("handshake 1 (initiator's key" in line for line in lines)
    assert any("handshake 2" in line for line in lines)
    assert any("Register(name='ana', password=***)" in line for line in lines)
    assert any("LoginAccepted(name='ana', server_name='server')" in line for line in lines)
    assert any("client 127.0.0.1:" in line and "ChatMessage(sender='ana', text='hello bob')" in line
               for line in lines)
    assert "(encrypted, no key)" not in story
    assert "expected:\n    AssertionError: bob never answered" in story


@pytest.mark.linux_only("loopback capture")
@pytest.mark.network
@pytest.mark.points(1)
def test_without_the_capability_to_capture_the_story_says_so_in_one_line(tmp_path):
    setpriv = shutil.which("setpriv")
    if setpriv is None or not capture_available():
        pytest.skip("needs setpriv (util-linux) and CAP_NET_RAW to take away")
    _, story, output = run_failing_test(tmp_path, (setpriv, "--bounding-set=-net_raw", "--inh-caps=-net_raw", "--"))
    assert story.splitlines()[1].startswith("no capture: needs CAP_NET_RAW")
    assert "expected:\n    AssertionError: bob never answered" in story
    assert "no capture: needs CAP_NET_RAW" in output


@pytest.mark.linux_only("loopback capture")
@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.parametrize("server_module, seen_only_with_its_keys", [
    ("lab1_tcp.server", "LoginAccepted(name='ana', server_name='server')"),
    ("lab2_udp.server", "RoomBatch(events=[#1 join ana], latest_seq=1)"),     # a datagram, by the room key
], ids=["lab1", "lab2"])
def test_a_server_started_with_keylog_writes_the_keys_that_decrypt_its_traffic(tmp_path, server_module,
                                                                               seen_only_with_its_keys):
    try:
        capture = Capture()
    except CaptureUnavailable as error:
        pytest.skip(f"no capture: {error}")
    env_file = create_test_env_file(tmp_path / ".env")
    log = tmp_path / "server-keys.log"
    broadcast_port = free_port(socket.SOCK_DGRAM)
    capture.ports.add(broadcast_port)
    lab2 = ["--broadcast-addr", "127.255.255.255", "--broadcast-port", str(broadcast_port)]
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # hears the room as a member would
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("", broadcast_port))
    listener.settimeout(DEADLINE_SECONDS)
    try:
        with Processes() as processes:
            server = processes.start(server_module, "--host", "127.0.0.1", "--port", "0", "--env", str(env_file),
                                     "--db", str(tmp_path / "chat.db"), "--headless", "--keylog", str(log),
                                     *(lab2 if server_module.startswith("lab2") else []),
                                     env={keylog.ENVIRONMENT_VARIABLE: None})   # this file only
            port = int(server.wait_for_stderr(r"^listening on 127\.0\.0\.1:(\d+)").group(1))
            capture.ports.add(port)
            sock, session, received = register_raw(port, env_file, "ana", PASSWORD)
            with sock:
                receive_until(sock, session, received, LoginAccepted)
                if server_module.startswith("lab2"):
                    # The join's datagram: more than a heartbeat's 104 bytes. Once a socket has it,
                    # so has the capture, which sees a packet before it is delivered.
                    join = b""
                    while len(join) <= 104:
                        join = listener.recv(2048)
    finally:
        listener.close()
        packets = capture.stop()
    keys = keylog.parse(log.read_text())
    assert len(keys.sessions) == 1
    story = "\n".join(tell(packets, keys))
    assert "Register(name='ana', password=***)" in story
    assert seen_only_with_its_keys in story


# --- A run's wire-story folder goes however the run ends ---------------------------------------

ENDING_TEST = '''
import os
import pathlib
import signal

from tests import wire_story
from tests.procs import Processes, create_test_env_file

def test_ends_as_told(tmp_path):
    env = create_test_env_file(tmp_path / ".env")
    with Processes() as processes:
        server = processes.start("lab1_tcp.server", "--host", "127.0.0.1", "--port", "0", "--env", str(env),
                                 "--db", str(tmp_path / "chat.db"), "--headless")
        server.wait_for_stderr(r"^listening on ")
        pathlib.Path(os.environ["INNER_SEEN"]).write_text(str(wire_story._current.folder))
        ending = os.environ["INNER_ENDING"]
        if ending in ("interrupt", "killed"):     # as run_nested stops a run: SIGINT, a SIGKILL if it hangs
            os.kill(os.getpid(), signal.SIGINT if ending == "interrupt" else signal.SIGKILL)
        assert ending != "failure", "the test fails"
'''

HOOK_THAT_RAISES = '''
import os

def pytest_runtest_logreport(report):
    if report.when == "call" and os.environ["INNER_ENDING"] == "hook raises":
        raise RuntimeError("a plugin's hook raises")
'''


@pytest.mark.points(2)
@pytest.mark.parametrize("ending", ["pass", "failure", "interrupt", "hook raises", "killed"])
def test_a_runs_wire_story_folder_and_key_log_are_deleted_however_the_run_ends(tmp_path, ending):
    if ending in ("interrupt", "killed") and os.name != "posix":
        pytest.skip("signals to a process are POSIX's")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(ENDING_TEST))
    (tmp_path / "inner_hooks.py").write_text(textwrap.dedent(HOOK_THAT_RAISES))
    folders, seen = tmp_path / "folders", tmp_path / "seen.txt"
    folders.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
           "INNER_SEEN": str(seen), "INNER_ENDING": ending}
    if ending != "killed":     # a folder of the test's own, which run_nested leaves to the run to empty
        env[wire_story.FOLDER_VARIABLE] = str(folders)
    result = run_nested(
        [sys.executable, "-m", "pytest", "-p", "tests.wire_story", "-p", "inner_hooks",
         "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_inner.py")],
        cwd=ROOT, timeout=DEADLINE_SECONDS * 3, env=env)
    expected_code = {"pass": 0, "failure": 1, "interrupt": 2, "hook raises": 3, "killed": -signal.SIGKILL}[ending]
    assert result.returncode == expected_code, result.stdout + result.stderr
    folder = Path(seen.read_text())         # the test had its folder while it ran ...
    assert folder.name.startswith("wire-story-"), folder
    assert (folder.parent == folders) == (ending != "killed"), folder
    assert not folder.exists(), result.stdout + result.stderr       # ... and it is gone
    if ending == "killed":     # run_nested's folder for the run went after it
        assert folder.parent.name.startswith("nested-run-wire-stories-") and not folder.parent.exists(), folder
