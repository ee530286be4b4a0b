"""A simulation of Windows' sockets, for running the kit's role processes on Linux.

The suite runs on Linux; students run the roles on Windows too. This module
makes a Linux process meet the Windows socket API where the kit depends on
it, so that a test can start a role under it and see it work, or fail as it
would on Windows. Python imports a ``sitecustomize`` module it finds on the
path before anything else; this one does nothing unless CHAT_LAB_SIMULATE is
``windows``. tests/procs.py puts this folder on a role's PYTHONPATH whenever
that variable is set (``Processes(simulate="windows")``, or the variable set
for the whole pytest run).

What it simulates, in the simulated process only:

- ``selectors.DefaultSelector`` is a ``SelectSelector`` (Windows has no epoll
  or kqueue), whose ``select()`` raises OSError 10038 (WSAENOTSOCK) when a
  registered descriptor is not a socket (a pipe, a terminal, a file), and
  OSError 10022 (WSAEINVAL) when nothing is registered: Windows' select()
  takes sockets only, and at least one;
- ``socket.SO_REUSEPORT`` does not exist;
- Winsock's error numbers where the kit reads a number: ``connect_ex``
  returns them (10035, WSAEWOULDBLOCK, for a connect under way), so does
  ``getsockopt(SO_ERROR)`` (10061 for a refused connect); the ``errno``
  module's socket constants have their Windows values (``errno.ECONNREFUSED``
  is 10061) and the WSAE... names exist; ``socket.errorTab`` names them, and
  ``os.strerror`` does not ("Unknown error");
- ``recvfrom`` of a datagram longer than its buffer raises OSError 10040
  (WSAEMSGSIZE), where Linux would cut the datagram silently.

What it does not simulate (only a real Windows can show these): signals
(no SIGTERM from another process; Ctrl-C is a console event), the console
(getpass through msvcrt, Python's console reader of stdin), tkinter and its
keys, the meaning of SO_REUSEADDR and a port bound next to TIME_WAIT, select()'s
limit of 512 sockets, the socketpair built over loopback TCP, a UDP socket
that raises WSAECONNRESET after an ICMP "port unreachable", the words and
numbers of errors that Python raises from other socket calls (they stay
Linux's), the kit's own checks of the platform (``sys.platform`` stays
"linux": those branches are unit-tested by setting their flags), paths, and
Windows Defender Firewall.
"""
from __future__ import annotations

import errno
import os
import selectors
import socket
import stat
import sys

SIMULATION_VARIABLE = "CHAT_LAB_SIMULATE"

WSAEINVAL = 10022
WSAEWOULDBLOCK = 10035
WSAENOTSOCK = 10038
WSAEMSGSIZE = 10040

# The errno constants that Python on Windows gives Winsock's values (CPython's
# Modules/errnomodule.c), with those values.
WINSOCK_ERRNO = {
    "EWOULDBLOCK": 10035, "EINPROGRESS": 10036, "EALREADY": 10037, "ENOTSOCK": 10038,
    "EDESTADDRREQ": 10039, "EMSGSIZE": 10040, "EPROTOTYPE": 10041, "ENOPROTOOPT": 10042,
    "EPROTONOSUPPORT": 10043, "EOPNOTSUPP": 10045, "EAFNOSUPPORT": 10047, "EADDRINUSE": 10048,
    "EADDRNOTAVAIL": 10049, "ENETDOWN": 10050, "ENETUNREACH": 10051, "ENETRESET": 10052,
    "ECONNABORTED": 10053, "ECONNRESET": 10054, "ENOBUFS": 10055, "EISCONN": 10056,
    "ENOTCONN": 10057, "ETIMEDOUT": 10060, "ECONNREFUSED": 10061, "ELOOP": 10062,
    "EHOSTUNREACH": 10065,
}
# Windows' socket.errorTab (CPython's Lib/socket.py), for the numbers above.
WINSOCK_WORDS = {
    10022: "An invalid operation was attempted.", 10024: "Too many open files.",
    10035: "The socket operation would block.", 10036: "A blocking operation is already in progress.",
    10037: "Operation already in progress.", 10038: "Socket operation on nonsocket.",
    10039: "Destination address required.", 10040: "Message too long.",
    10041: "Protocol wrong type for socket.", 10042: "Bad protocol option.",
    10043: "Protocol not supported.", 10045: "Operation not supported.",
    10047: "Address family not supported by protocol family.", 10048: "The network address is in use.",
    10049: "Cannot assign requested address.", 10050: "Network is down.",
    10051: "Network is unreachable.", 10052: "Network dropped connection on reset.",
    10053: "Software caused connection abort.", 10054: "The connection has been reset.",
    10055: "No buffer space available.", 10056: "Socket is already connected.",
    10057: "Socket is not connected.", 10060: "The operation timed out.",
    10061: "Connection refused.", 10062: "Cannot translate name.", 10065: "The host is unreachable.",
}
# Linux's number -> Winsock's, for the numbers a call hands back (not raises).
_LINUX_TO_WINSOCK = {getattr(errno, name): number for name, number in WINSOCK_ERRNO.items()}
# A non-blocking connect under way: Linux says EINPROGRESS, Windows WSAEWOULDBLOCK.
_LINUX_TO_WINSOCK[errno.EINPROGRESS] = WSAEWOULDBLOCK


class WindowsSelectSelector(selectors.SelectSelector):
    """select() as Windows has it: sockets only, and at least one."""

    def select(self, timeout: float | None = None) -> list:
        if not self.get_map():
            raise OSError(WSAEINVAL, "An invalid argument was supplied")
        for key in self.get_map().values():
            if not stat.S_ISSOCK(os.fstat(key.fd).st_mode):
                raise OSError(WSAENOTSOCK, "An operation was attempted on something that is not a socket")
        return super().select(timeout)


def _windows_strerror(number: int) -> str:
    return "Unknown error" if number >= 10000 else _linux_strerror(number)


_linux_strerror = os.strerror
_linux_connect_ex = socket.socket.connect_ex
_linux_getsockopt = socket.socket.getsockopt
_linux_recvfrom = socket.socket.recvfrom


def _connect_ex(sock: socket.socket, address) -> int:
    number = _linux_connect_ex(sock, address)
    return _LINUX_TO_WINSOCK.get(number, number)


def _getsockopt(sock: socket.socket, level: int, option: int, *args):
    value = _linux_getsockopt(sock, level, option, *args)
    if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR) and not args:
        return _LINUX_TO_WINSOCK.get(value, value)
    return value


def _recvfrom(sock: socket.socket, size: int, *flags: int):
    if sock.type != socket.SOCK_DGRAM:
        return _linux_recvfrom(sock, size, *flags)
    datagram, source = _linux_recvfrom(sock, size + 1, *flags)
    if len(datagram) > size:   # Windows: the rest is lost, and the call fails saying so
        raise OSError(WSAEMSGSIZE, "A message sent on a datagram socket was larger than the internal "
                                   "message buffer or some other network limit, or the buffer used to "
                                   "receive a datagram into was smaller than the datagram itself")
    return datagram, source


def simulate_windows() -> None:
    """Make this process meet Windows' socket API as described above."""
    selectors.DefaultSelector = WindowsSelectSelector
    if hasattr(socket, "SO_REUSEPORT"):
        del socket.SO_REUSEPORT
    for name, number in WINSOCK_ERRNO.items():
        setattr(errno, name, number)
        setattr(errno, f"WSA{name}", number)
    errno.WSAEMFILE = 10024
    socket.errorTab = dict(WINSOCK_WORDS)
    os.strerror = _windows_strerror
    socket.socket.connect_ex = _connect_ex
    socket.socket.getsockopt = _getsockopt
    socket.socket.recvfrom = _recvfrom


def _run_the_next_sitecustomize() -> None:
    """Python imports the first sitecustomize on the path only. A test may put
    its own after this one (tests/test_lab1.py's name resolver, a low limit of
    descriptors): run that one too, as if this one were not there."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in sys.path:
        path = os.path.join(os.path.abspath(folder or "."), "sitecustomize.py")
        if os.path.dirname(path) != here and os.path.isfile(path):
            with open(path, encoding="utf-8") as source:
                exec(compile(source.read(), path, "exec"), {"__name__": "sitecustomize", "__file__": path})
            return


if os.environ.get(SIMULATION_VARIABLE) == "windows":
    simulate_windows()
_run_the_next_sitecustomize()
