"""The labs on a real (virtual) LAN: every host its own network namespace.

Loopback hides what a class meets: separate machines, each with its own
address, joined by a switch, where a broadcast datagram is copied by the
network and not by one kernel to its own sockets. Linux network namespaces
give us that on one machine. Each host is a namespace with its own network
stack and one virtual Ethernet cable (a veth pair) into a switch, a Linux
bridge in a namespace of its own. The addresses (LAN_PREFIX.0/24) exist only
inside those namespaces, so nothing here touches the machine's own network.

A role runs on a host as ``ip netns exec HOST python -m ...``. Namespaces
are named per run, so parallel runs never clash, and are removed afterwards,
pass or fail. Creating them needs root and ``ip`` (iproute2); without them
the tests are skipped with the reason. One test needs no namespaces: the
room over multicast on loopback, where the interface must be chosen by hand.

One host stands alone: a Mac, as far as the room can tell. macOS's loopback
interface cannot broadcast, so a datagram to 127.255.255.255 leaves and no
socket gets it. Linux broadcasts on loopback; in that namespace an nftables
rule drops (and counts) every datagram to 127.255.255.255 on arrival, which
does the same, and the test proves it before the server starts. There the
room and the demo's lossy relay must go multicast, and say so.
"""
from __future__ import annotations

import os
import re
import secrets
import select
import time
import shutil
import socket
import subprocess
import sys

import pytest

from common import net
from common.config import load_settings
from tests.procs import (DEADLINE_SECONDS, Processes, RoleProcess, assert_heard_the_room_by_datagram,
                         create_test_env_file, free_port)

LAN_PREFIX = "10.77.0"                  # a private /24 that exists only in the test's namespaces
BROADCAST = f"{LAN_PREFIX}.255"
MULTICAST_GROUP = "239.77.0.1"          # administratively scoped: never leaves the site
PASSWORD = "correct horse battery"
COMMAND_TIMEOUT_SECONDS = 20

pytestmark = pytest.mark.network


class LanError(Exception):
    """An ``ip`` or ``tc`` command failed; the message is its stderr."""


def output_of(*command: str) -> str:
    """Run an ``ip`` or ``tc`` command; return its stdout. Raises LanError if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    if result.returncode != 0:
        raise LanError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result.stdout


def run(*command: str) -> None:
    output_of(*command)


class Lan:
    """A switch and the hosts plugged into it, each host a network namespace."""

    def __init__(self) -> None:
        # Unique per run: the pid and a random part, short enough for the kernel's names.
        self.tag = f"chatlab{os.getpid()}{secrets.token_hex(2)}"
        self.namespaces: list[str] = []
        self.ports: dict[str, str] = {}     # host -> its cable's port on the switch
        self.switch = self._add_namespace("switch")
        # A bridge forwards Ethernet frames between its ports, as a switch does,
        # and floods broadcast frames out of every port.
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")

    def _add_namespace(self, role: str) -> str:
        name = f"{self.tag}-{role}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def add_host(self, role: str) -> tuple[str, str]:
        """Plug a new host into the switch; return its namespace and its address."""
        number = len(self.namespaces)            # .1 for the first host, .2 for the next
        host = self._add_namespace(role)
        port, address = f"port{number}", f"{LAN_PREFIX}.{number}"
        self.ports[host] = port
        # One cable: the host's end is its eth0, the other end a port of the bridge.
        run("ip", "link", "add", port, "netns", self.switch, "type", "veth",
            "peer", "name", "eth0", "netns", host)
        run("ip", "-n", self.switch, "link", "set", port, "master", "br0", "up")
        # "brd +" sets the subnet's broadcast address, LAN_PREFIX.255.
        run("ip", "-n", host, "addr", "add", f"{address}/24", "brd", "+", "dev", "eth0")
        run("ip", "-n", host, "link", "set", "eth0", "up")
        run("ip", "-n", host, "link", "set", "lo", "up")
        # A machine on a real LAN has a default route; multicast with no
        # interface chosen follows it.
        run("ip", "-n", host, "route", "add", "default", "dev", "eth0")
        return host, address

    def add_loopback_host(self, role: str) -> str:
        """A host with no cable: only its loopback interface, up. Returns its namespace."""
        host = self._add_namespace(role)
        run("ip", "-n", host, "link", "set", "lo", "up")
        return host

    def add_loss(self, host: str) -> str:
        """20% loss (and, with tc netem, some delay) on one host's cable; returns
        how. A kernel without netem (sch_netem) still has nf_tables: then nft
        drops a random 20% of the room's datagrams arriving at the host."""
        netem = ["netem", "loss", "20%", "delay", "5ms", "2ms"]
        try:
            run("ip", "netns", "exec", host, "tc", "qdisc", "add", "dev", "eth0", "root", *netem)
            run("ip", "netns", "exec", self.switch, "tc", "qdisc", "add", "dev", self.ports[host], "root", *netem)
            return "tc netem: 20% loss and 5 ms delay both ways"
        except LanError as netem_error:
            if shutil.which("nft") is None:
                raise LanError(f"{netem_error}; and nft (nftables) is not installed") from None
        run("ip", "netns", "exec", host, "nft", "add", "table", "inet", "lossy")
        run("ip", "netns", "exec", host, "nft", "add", "chain", "inet", "lossy", "in",
            "{ type filter hook input priority 0; }")
        run("ip", "netns", "exec", host, "nft", "add", "rule", "inet", "lossy", "in",
            "meta", "l4proto", "udp", "numgen", "random", "mod", "5", "0", "counter", "drop")
        return "nft: 20% of arriving UDP datagrams dropped (no netem here, so no delay)"

    def dropped_by_nft(self, host: str) -> int:
        """How many datagrams add_loss's nft rule dropped at ``host``."""
        listing = output_of("ip", "netns", "exec", host, "nft", "list", "chain", "inet", "lossy", "in")
        return int(re.search(r"counter packets (\d+)", listing).group(1))

    def close(self) -> None:
        # Deleting a namespace destroys its end of every cable, and so the cable.
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True,
                           timeout=COMMAND_TIMEOUT_SECONDS)


@pytest.fixture
def lan():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) is missing")
    try:
        network = Lan()
    except (LanError, OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot create network namespaces here: {error}")
    try:
        yield network
    finally:
        network.close()


def free_udp_port() -> int:
    """A UDP port nobody uses now (see procs.free_port)."""
    return free_port(socket.SOCK_DGRAM)


def on_host(host: str) -> list[str]:
    return ["ip", "netns", "exec", host]


class Lab2Class:
    """A Lab 2 server on one host, clients on others, one .env copied to all."""

    def __init__(self, lan: Lan, tmp_path, processes: Processes, *server_args: str) -> None:
        self.tmp_path, self.processes = tmp_path, processes
        self.env_file = create_test_env_file(tmp_path / ".env")
        self.server_host, self.server_address = lan.add_host("server")
        # As in class: listen on every interface, broadcast to the subnet.
        self.server = processes.start(
            "lab2_udp.server", "--headless", "--host", "0.0.0.0", "--port", "0",
            "--broadcast-addr", BROADCAST, "--env", str(self.env_file),
            "--db", str(tmp_path / "chat.db"), *server_args, prefix=on_host(self.server_host))
        self.port = self.server.wait_for_stderr(r"^listening on 0\.0\.0\.0:(\d+), broadcasting").group(1)

    def join(self, host: str, name: str, *client_args: str) -> RoleProcess:
        client = self.processes.start(
            "lab2_udp.client", "--headless", "--host", self.server_address, "--port", self.port,
            "--name", name, "--register", "--env", str(self.env_file), *client_args,
            env={"CHAT_PASSWORD": PASSWORD}, prefix=on_host(host))
        client.wait_for_stderr(rf"^logged in as {name}$")
        return client


def start_bystander(processes: Processes, host: str, env_file, *group_and_server: str) -> RoleProcess:
    """A host with no account and no TCP session that only listens on the
    room's UDP port (and joins the group, given one and the server's address):
    whatever it hears, the network delivered."""
    port = load_settings(env_file, create=False).broadcast_port
    bystander = processes.start("tests.test_lan", str(port), *group_and_server, prefix=on_host(host))
    bystander.wait_for_stderr(r"^listening$")
    return bystander


def listen_and_report(port: int, group: str = "", server_host: str = "") -> None:
    """The bystander's program: print the sender of every datagram heard."""
    sock = net.multicast_receiver(group, port, server_host) if group else net.broadcast_receiver(port)
    sock.setblocking(True)
    print("listening", file=sys.stderr, flush=True)
    while True:
        data, (address, _port) = sock.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)
        print(f"{len(data)} bytes from {address}", flush=True)


def chat_and_compare(server: RoleProcess, clients: list[RoleProcess], lines_each: int = 1,
                     earlier_lines: int = 0) -> None:
    """Everyone speaks; then every screen must show the same numbered lines and
    the same transcript fingerprint (``earlier_lines``: said before the call)."""
    for line in range(lines_each):
        for index, client in enumerate(clients):
            client.send_line(f"hello {line} from host {index}")
    server.send_line("welcome to the LAN")
    last_seq = len(clients) * (1 + lines_each) + 1 + earlier_lines   # joins, lines, the server's line
    screens = [server, *clients]
    for screen in screens:
        screen.wait_for_stdout(rf"^#{last_seq} ")
    first = [line for line in clients[0].stdout_lines if line.startswith("#")]
    assert len(first) == last_seq
    assert any(line.endswith("server: welcome to the LAN") for line in first)
    for screen in screens[1:]:
        assert [line for line in screen.stdout_lines if line.startswith("#")] == first
    summaries = set()
    for screen in screens:
        screen.send_line("/hash")
        summaries.add(screen.wait_for_stderr(rf"^transcript [0-9a-f]{{12}} {last_seq}$").group(0))
    assert len(summaries) == 1, summaries


@pytest.mark.linux_only("network namespaces")
@pytest.mark.points(2)
def test_lab2_room_broadcast_on_a_lan_reaches_three_hosts_identically(lan, tmp_path):
    with Processes() as processes:
        lab = Lab2Class(lan, tmp_path, processes)
        bystander = start_bystander(processes, lan.add_host("bystander")[0], lab.env_file)
        clients = [lab.join(lan.add_host(f"pc{index}")[0], name)
                   for index, name in enumerate(["alice", "bob", "carol"])]
        chat_and_compare(lab.server, clients)
        # The room's datagrams crossed the switch: one more host heard them, from the server.
        bystander.wait_for_stdout(rf"^\d+ bytes from {lab.server_address}$")


@pytest.mark.linux_only("network namespaces")
@pytest.mark.points(1)
def test_lab2_room_multicast_on_a_lan_reaches_three_hosts_identically(lan, tmp_path):
    with Processes() as processes:
        lab = Lab2Class(lan, tmp_path, processes, "--multicast", MULTICAST_GROUP)
        bystander = start_bystander(processes, lan.add_host("bystander")[0], lab.env_file,
                                    MULTICAST_GROUP, lab.server_address)
        hosts = [lan.add_host(f"pc{index}")[0] for index in range(3)]
        clients = [lab.join(host, name, "--multicast", MULTICAST_GROUP)
                   for host, name in zip(hosts, ["alice", "bob", "carol"])]
        for host in hosts:   # each client joined the group on its LAN interface
            assert re.search(rf"inet\s+{re.escape(MULTICAST_GROUP)}\b", output_of(
                "ip", "-n", host, "maddr", "show", "dev", "eth0")), host
        chat_and_compare(lab.server, clients)
        bystander.wait_for_stdout(rf"^\d+ bytes from {lab.server_address}$")


@pytest.mark.points(1)
def test_lab2_room_multicast_on_loopback(tmp_path):
    env_file = create_test_env_file(tmp_path / ".env")
    port = free_udp_port()
    group = ["--multicast", MULTICAST_GROUP, "--broadcast-port", str(port)]
    # Joined before the server starts, so it hears every datagram of the room.
    with net.multicast_receiver(MULTICAST_GROUP, port, "127.0.0.1") as member_socket, \
            Processes() as processes:
        server = processes.start("lab2_udp.server", "--headless", "--host", "127.0.0.1", "--port", "0",
                                 "--env", str(env_file), "--db", str(tmp_path / "chat.db"), *group)
        tcp_port = server.wait_for_stderr(
            rf"^listening on 127\.0\.0\.1:(\d+), broadcasting to {MULTICAST_GROUP}:{port}$").group(1)
        clients = []
        for name in ["alice", "bob"]:
            clients.append(processes.start(
                "lab2_udp.client", "--headless", "--host", "127.0.0.1", "--port", tcp_port,
                "--name", name, "--register", "--env", str(env_file), *group,
                env={"CHAT_PASSWORD": PASSWORD}))
            clients[-1].wait_for_stderr(rf"^logged in as {name}$")
        chat_and_compare(server, clients)
        readable, _, _ = select.select([member_socket], [], [], DEADLINE_SECONDS)
        assert readable, "no datagram reached a socket that joined the group"
        assert member_socket.recvfrom(net.MAX_DATAGRAM_RECV_BYTES)[1][0] == "127.0.0.1"


@pytest.mark.linux_only("network namespaces")
@pytest.mark.points(1)
def test_lab1_chat_between_two_hosts(lan, tmp_path):
    env_file = create_test_env_file(tmp_path / ".env")
    server_host, server_address = lan.add_host("server")
    client_host, _address = lan.add_host("pc")
    with Processes() as processes:
        server = processes.start("lab1_tcp.server", "--headless", "--host", "0.0.0.0", "--port", "0",
                                 "--env", str(env_file), "--db", str(tmp_path / "chat.db"),
                                 prefix=on_host(server_host))
        port = server.wait_for_stderr(r"^listening on 0\.0\.0\.0:(\d+)$").group(1)
        alice = processes.start("lab1_tcp.client", "--headless", "--host", server_address,
                                "--port", port, "--name", "alice", "--register", "--env", str(env_file),
                                env={"CHAT_PASSWORD": PASSWORD}, prefix=on_host(client_host))
        alice.wait_for_stderr(r"^logged in as alice$")
        alice.send_line("hello across the wire")
        server.wait_for_stdout(r"^alice: hello across the wire$")
        server.send_line("hello back")
        alice.wait_for_stdout(r"^server: hello back$")


@pytest.mark.linux_only("network namespaces")
@pytest.mark.points(1)
def test_lab2_room_stays_identical_with_loss_on_one_hosts_cable(lan, tmp_path):
    if shutil.which("tc") is None:
        pytest.skip("`tc` (iproute2) is missing")
    with Processes() as processes:
        lab = Lab2Class(lan, tmp_path, processes)
        hosts = [lan.add_host(f"pc{index}")[0] for index in range(3)]
        try:
            how = lan.add_loss(hosts[0])
        except LanError as error:
            pytest.skip(f"neither tc netem nor nft can drop packets here: {error}")
        print(f"loss on {hosts[0]}'s cable by {how}")
        clients = [lab.join(host, name) for host, name in zip(hosts, ["alice", "bob", "carol"])]
        line = 0
        # One at a time, so each goes out in a datagram of its own; with nft, on until one of them
        # was really dropped (after 30 datagrams, the odds that none was are 1 in 800; after 200,
        # none at all).
        while line < 15 or (how.startswith("nft") and line < 100 and not lan.dropped_by_nft(hosts[0])):
            for client, name in ((clients[1], "bob"), (clients[2], "carol")):   # within their budgets
                client.send_line(f"one of many {line}")
                lab.server.wait_for_stdout(rf"^#\d+ {name}: one of many {line}$")
            line += 1
        chat_and_compare(lab.server, clients, earlier_lines=2 * line)
        if how.startswith("nft"):
            assert lan.dropped_by_nft(hosts[0]) > 0   # the loss was real, and the room repaired it


def nft_counted(host: str, table: str, chain: str) -> int:
    """How many packets the first nft counter of that chain on ``host`` counted."""
    listing = output_of("ip", "netns", "exec", host, "nft", "list", "chain", "ip", table, chain)
    return int(re.search(r"counter packets (\d+)", listing).group(1))


def probe_loopback_broadcast(port: int) -> None:
    """The probe's program, on the host: two sockets bound as clients bind, one
    datagram to 127.255.255.255; once told (a line on stdin) that the datagram
    was dealt with, it prints how many of the sockets got it."""
    listeners = [net.broadcast_receiver(port) for _ in range(2)]
    with net.broadcast_sender() as sender:
        sender.sendto(b"does loopback broadcast?", ("127.255.255.255", port))
    print("sent", file=sys.stderr, flush=True)
    sys.stdin.readline()
    heard = 0
    for listener in listeners:
        try:
            listener.recv(net.MAX_DATAGRAM_RECV_BYTES)
            heard += 1
        except BlockingIOError:   # nothing arrived on this one
            pass
    print(f"heard {heard} of 2", flush=True)


@pytest.fixture
def mac(lan) -> str:
    """A host alone whose loopback cannot broadcast: nft drops, and counts, every
    datagram to 127.255.255.255 as it arrives. Returns its namespace."""
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is missing: it is what makes loopback broadcast fail here")
    host = lan.add_loopback_host("mac")
    nft = ["ip", "netns", "exec", host, "nft"]
    run(*nft, "add", "table", "ip", "nobroadcast")
    run(*nft, "add", "chain", "ip", "nobroadcast", "in", "{ type filter hook input priority 0; }")
    run(*nft, "add", "rule", "ip", "nobroadcast", "in", "ip", "daddr", "127.255.255.255", "counter", "drop")
    return host


@pytest.mark.points(2)
def test_lab2_one_machine_room_where_loopback_cannot_broadcast_goes_multicast_by_datagram(mac, tmp_path):
    env_file = create_test_env_file(tmp_path / ".env")
    port = free_udp_port()   # the namespace has ports of its own: this one is free there too
    with Processes() as processes:
        # First, proof that loopback broadcast fails on this host: the datagram was sent,
        # nft counted it on arrival (so it will never arrive later), and no socket has it.
        probe = processes.start("tests.test_lan", "probe", str(port), prefix=on_host(mac))
        probe.wait_for_stderr(r"^sent$")
        deadline = time.monotonic() + DEADLINE_SECONDS
        while nft_counted(mac, "nobroadcast", "in") < 1:
            assert time.monotonic() < deadline, "nft never saw the datagram to 127.255.255.255"
        probe.send_line("and?")
        probe.wait_for_stdout(r"^heard 0 of 2$")
        server = processes.start(
            "lab2_udp.server", "--headless", "--host", "127.0.0.1", "--port", "0", "--env", str(env_file),
            "--db", str(tmp_path / "chat.db"), "--broadcast-port", str(port), prefix=on_host(mac))
        group = re.escape(net.LOOPBACK_GROUP)
        tcp_port = server.wait_for_stderr(
            rf"^listening on 127\.0\.0\.1:(\d+), broadcasting to {group}:{port}$").group(1)
        server.wait_for_stderr(
            rf"^the room is multicast to {group}:{port} on loopback, not broadcast: a probe to 127\.255\.255\.255 "
            r"reached no socket here \(this system's loopback cannot broadcast\); clients learn the group at "
            r"login; a probe datagram reached 2 sockets bound to its port here$")
        clients = []
        for name in ["alice", "bob"]:   # told nothing about multicast: the server names the group
            clients.append(processes.start(
                "lab2_udp.client", "--headless", "--host", "127.0.0.1", "--port", tcp_port, "--name", name,
                "--register", "--env", str(env_file), "--broadcast-port", str(port),
                env={"CHAT_PASSWORD": PASSWORD}, prefix=on_host(mac)))
            clients[-1].wait_for_stderr(rf"^logged in as {name}$")
        chat_and_compare(server, clients, lines_each=3)
        for client in clients:
            client.send_line("/quit")
            assert client.wait_exit() == 0, client.output()
            assert_heard_the_room_by_datagram(client)
        # Two datagrams ever went to 127.255.255.255: the test's probe and the server's.
        assert nft_counted(mac, "nobroadcast", "in") == 2


@pytest.mark.points(1)
def test_the_demo_where_loopback_cannot_broadcast_still_loses_and_repairs(mac):
    with Processes() as processes:
        demo = processes.start("lab2_udp.demo", env={"DISPLAY": None}, prefix=on_host(mac))
        assert demo.wait_exit(timeout=120) == 0, demo.output()
    # The relay sent the room where the server did, so the lesson happened: datagrams lost, screens the same.
    demo.wait_for_stderr(rf"^lossy relay: the room is multicast to {re.escape(net.LOOPBACK_GROUP)}:\d+ on loopback")
    counts = re.search(r"^The network: received (\d+), dropped (\d+)", "\n".join(demo.stdout_lines), re.MULTILINE)
    assert counts and int(counts.group(1)) > 10 and int(counts.group(2)) > 0, demo.output()
    assert "Every screen shows the same room transcript." in demo.stdout_lines, demo.output()
    # And none of it was lost to loopback broadcast: only the relay's probe and the server's went there.
    assert nft_counted(mac, "nobroadcast", "in") == 2


if __name__ == "__main__":   # run on a LAN host by start_bystander, or by the loopback probe
    if sys.argv[1] == "probe":
        probe_loopback_broadcast(int(sys.argv[2]))
    else:
        listen_and_report(int(sys.argv[1]), *sys.argv[2:])
