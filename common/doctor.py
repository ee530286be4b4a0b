"""The preflight a student runs when nothing works: python -m common.doctor

It checks, one by one, what the labs need from this machine, and prints
every problem with its fix; it exits 1 if there was any:

- Python 3.10+ and cryptography 45+ (a server would rather have 50+, which releases
  the GIL while it hashes a password);
- .env: present, every key 64 hex digits, the public key the private one's;
- the ports free: LAB1_PORT and LAB2_PORT (TCP), BROADCAST_PORT (UDP);
- the room's round trip, as the Lab 2 server tries it at start
  (net.open_room_channel): a datagram sent to BROADCAST_ADDR:BROADCAST_PORT
  (or the multicast group) comes back to sockets bound as Lab 2 clients bind
  them; where loopback cannot broadcast (macOS), the loopback group instead;
- the network interfaces and their broadcast addresses (Linux, from ``ip``),
  and whether BROADCAST_ADDR is one of them;
- tkinter, and a display for the windows.

Each fix is given in the words and tools of the system it runs on
(``sys.platform``): ``ss`` and ``apt-get`` on Linux, ``lsof`` and Homebrew on
macOS, ``netstat`` and Windows Security on Windows.

Unlike the rest of common/, this file does I/O: it is a tool, not the core.

    python -m common.doctor [--env .env]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

from common import net
from common.config import ConfigError, Settings, load_settings

MINIMUM_PYTHON = (3, 10)
MINIMUM_CRYPTOGRAPHY = 45            # pyproject.toml's floor
PREFERRED_SERVER_CRYPTOGRAPHY = 50   # common/accounts.py: a server below it warns


@dataclass
class Check:
    """One line of the report: what was checked, and the fix if it failed."""
    what: str
    fix: str = ""          # empty: all is well

    def __str__(self) -> str:
        return f"ok    {self.what}" if not self.fix else f"FAIL  {self.what}\n      fix: {self.fix}"


def check_versions() -> list[Check]:
    checks = []
    version = platform.python_version()
    if sys.version_info[:2] >= MINIMUM_PYTHON:
        checks.append(Check(f"Python {version}"))
    else:
        checks.append(Check(f"Python {version} is older than 3.10", "install Python 3.10 or newer"))
    try:
        cryptography = metadata.version("cryptography")
    except metadata.PackageNotFoundError:
        return checks + [Check("cryptography is not installed", "run make test once, or pip install -e '.[test]'")]
    major = int(cryptography.split(".")[0])
    if major >= PREFERRED_SERVER_CRYPTOGRAPHY:
        checks.append(Check(f"cryptography {cryptography}"))
    elif major >= MINIMUM_CRYPTOGRAPHY:
        checks.append(Check(f"cryptography {cryptography} (enough for a client; a server warns below "
                            f"{PREFERRED_SERVER_CRYPTOGRAPHY})"))
    else:
        checks.append(Check(f"cryptography {cryptography} is older than {MINIMUM_CRYPTOGRAPHY}",
                            f"pip install --upgrade 'cryptography>={MINIMUM_CRYPTOGRAPHY}' "
                            "(in .venv: make clean test)"))
    return checks


def check_env_file(env_file: str) -> tuple[list[Check], Settings | None]:
    """The .env: present and well-formed. Returns the settings if they load."""
    if not os.path.exists(env_file):
        return [Check(f"{env_file} does not exist",
                      "on the server: start it once to write one with fresh keys "
                      "(python -m lab2_udp.server --headless); elsewhere: copy the server's .env here")], None
    try:
        settings = load_settings(env_file, create=False)
    except ConfigError as error:
        return [Check(f"{env_file}: {error}",
                      "copy the server's .env again, whole; on the server, move the broken file away "
                      "and start the server to write a new one (every client then needs the new copy)")], None
    role = "the server's copy" if settings.server_private_key else "a client's copy (no private key)"
    return [Check(f"{env_file}: keys well-formed and matching, {role}")], settings


def port_owner_command(port: int, protocol: str) -> str:
    """The command that names the program holding ``port`` ("tcp" or "udp") on this system."""
    if sys.platform == "win32":
        return f"netstat -ano -p {protocol} | findstr :{port} (its last column is the PID; Task Manager names it)"
    if sys.platform == "darwin":
        return f"lsof -nP -i{protocol.upper()}:{port}"
    return f"ss -l{protocol[0]}np 'sport = :{port}'"


def firewall_fix(port: int) -> str:
    """How to let the room's UDP port through the firewall of this system."""
    if sys.platform == "win32":
        return (f"{net.firewall_causes()}: make this network Private (Settings > Network & internet > your "
                "network > Private), and allow Python through the firewall on Private networks (Windows Security "
                "> Firewall & network protection > Allow an app through firewall)")
    if sys.platform == "darwin":
        return (f"{net.firewall_causes()}: in System Settings > Network > Firewall > Options, allow incoming "
                "connections for Python; in System Settings > Privacy & Security > Local Network, switch on "
                "the app you run Python in")
    return (f"{net.firewall_causes()} may drop UDP to port {port}: see sudo nft list ruleset or sudo ufw "
            f"status, and allow it (sudo ufw allow {port}/udp)")


def tkinter_fix() -> str:
    """How to get tkinter on this system."""
    if sys.platform == "win32":
        return "run the python.org installer again, Modify, and tick 'tcl/tk and IDLE' (or use --headless)"
    if sys.platform == "darwin":
        return "brew install python-tk (Homebrew's Python), or use the python.org installer (or use --headless)"
    return "apt-get install python3-tk (or use --headless)"


def check_tcp_port(name: str, port: int) -> Check:
    # Bind as the server does (SO_REUSEADDR: a port in TIME_WAIT is free);
    # EADDRINUSE then means that a program is listening on it right now.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
            sock.listen()
        except OSError as error:
            return Check(f"{name}={port} (TCP) cannot be used: {net.describe_error(error)}",
                         f"stop the program on it ({port_owner_command(port, 'tcp')} names it), "
                         f"often a server still running, or set {name} to another port in .env")
    return Check(f"{name}={port} (TCP) is free")


def check_broadcast(settings: Settings) -> list[Check]:
    """Bind the broadcast port as a client does, then try the room's address as the server does."""
    address, port = settings.broadcast_addr, settings.broadcast_port
    try:
        receiver = net.broadcast_receiver(port)
    except OSError as error:
        return [Check(f"BROADCAST_PORT={port} (UDP) cannot be bound: {net.describe_error(error)}",
                      f"a program bound it without SO_REUSEADDR: stop it ({port_owner_command(port, 'udp')} "
                      "names it), or set BROADCAST_PORT to another port in every .env")]
    checks = [Check(f"BROADCAST_PORT={port} (UDP) can be bound, shared with other clients")]
    try:
        # On a client's copy SERVER_HOST is the server, not this machine: a group is then
        # sent out of the interface that faces it.
        host = settings.host if net.is_own_address(settings.host) else net.interface_facing(settings.host)
        channel = net.open_room_channel(host, address, port, settings.multicast_group)
    except OSError as error:
        return checks + [Check(f"cannot send to {address}:{port}: {net.describe_error(error)}",
                               "check BROADCAST_ADDR (the subnet's broadcast address) and MULTICAST_GROUP in .env")]
    finally:
        receiver.close()
    channel.sock.close()
    if channel.choice.startswith("warning: "):
        return checks + [Check(channel.choice.removeprefix("warning: "), firewall_fix(port))]
    if channel.group and not settings.multicast_group:   # macOS: the server will do the same, by itself
        return checks + [Check(f"a broadcast to {address}:{port} reaches no socket here, so {channel.choice}")]
    return checks + [Check(f"a broadcast to {address}:{port} came back" if not channel.group else channel.choice)]


def interfaces() -> list[tuple[str, str, str]]:
    """(interface, address/prefix, broadcast address) of every IPv4 address,
    from ``ip -j addr`` (Linux); [] if that is not available (macOS's ``ip``,
    from Homebrew, knows no -j)."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None:
        return []
    try:
        listed = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True,
                                           timeout=10, check=True).stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    found = []
    for interface in listed:
        for info in interface.get("addr_info", []):
            if info.get("family") == "inet":
                network = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
                # Loopback has no "broadcast" entry; its broadcast address is still
                # the network's last one, 127.255.255.255.
                found.append((interface["ifname"], f"{info['local']}/{info['prefixlen']}",
                              info.get("broadcast", str(network.broadcast_address))))
    return found


def check_interfaces(settings: Settings | None) -> list[Check]:
    found = interfaces()
    if not found:
        names = ", ".join(name for _, name in socket.if_nameindex())
        how = {"win32": "ipconfig shows their addresses and masks", "darwin": "ifconfig shows their broadcast "
               "addresses"}.get(sys.platform, "install iproute2 to see their broadcast addresses")
        return [Check(f"interfaces: {names} ({how})")]
    checks = [Check(f"interface {name} {address} broadcast {broadcast}") for name, address, broadcast in found]
    if settings is not None:
        broadcasts = {broadcast for _, _, broadcast in found} | {"255.255.255.255"}
        if settings.broadcast_addr not in broadcasts:
            checks.append(Check(f"BROADCAST_ADDR={settings.broadcast_addr} is no interface's broadcast address",
                                "set BROADCAST_ADDR in .env to one listed above: 127.255.255.255 on one "
                                "machine, the LAN's on a class network"))
    return checks


def check_windows() -> list[Check]:
    try:
        import tkinter
    except ImportError:
        return [Check("tkinter is missing", tkinter_fix())]
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # Not a problem: over SSH, in CI, the roles chat in the terminal by themselves.
        return [Check("no display (DISPLAY is not set): the roles will run in the terminal, as with "
                      "--headless; for windows, run from a desktop session (or ssh -X)")]
    try:
        root = tkinter.Tk()
        root.destroy()
    except tkinter.TclError as error:
        where = "check DISPLAY (echo $DISPLAY), or " if sys.platform.startswith("linux") else ""
        return [Check(f"tkinter cannot open a window: {error}", f"{where}add --headless to use the terminal")]
    return [Check(f"tkinter {tkinter.TkVersion} opens windows")]


def diagnose(env_file: str) -> list[Check]:
    checks = check_versions()
    env_checks, settings = check_env_file(env_file)
    checks += env_checks
    if settings is not None:
        checks += [check_tcp_port("LAB1_PORT", settings.lab1_port), check_tcp_port("LAB2_PORT", settings.lab2_port)]
        checks += check_broadcast(settings)
    checks += check_interfaces(settings)
    return checks + check_windows()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--env", default=".env", help="settings file to check (default: .env)")
    args = parser.parse_args(argv)
    checks = diagnose(args.env)
    for check in checks:
        print(check)
    problems = sum(bool(check.fix) for check in checks)
    print(f"{problems} problem(s) found" if problems else "all good")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
