"""What in the suite needs Linux, and why: the one place that says so.

The kit runs on Linux, macOS and Windows, and so do its tests, except those
that use something only Linux offers. Each such need is named here with its
reason. A test has a need when it says so,

    @pytest.mark.linux_only("network namespaces")
    def test_lab1_chat_between_two_hosts(lan, tmp_path): ...

or, for Xvfb, when it uses a fixture that starts one (XVFB_FIXTURES).

On another platform such a test is not run, and the grading report
(tests/grading.py) shows it as "not run here", out of a maximum without its
points: it is neither passed nor failed. On Linux it runs as any test does,
and a skip there, for whatever reason (no root, no Xvfb installed), earns
nothing, as every skip does.

CHAT_TESTS_PLATFORM=darwin (or win32, linux) makes the suite take this
machine for that platform: the kit's own tests of this rule run on Linux.
"""
from __future__ import annotations

import os
import sys

import pytest

PLATFORM_VARIABLE = "CHAT_TESTS_PLATFORM"
NOT_RUN_HERE = "not run here"

LINUX_ONLY = {
    "network namespaces": "a host per namespace, joined by veth cables and a bridge; ip netns, as root",
    "loopback capture": "an AF_PACKET socket that taps lo, as tcpdump does",
    "loopback broadcast": "a datagram to 127.255.255.255 comes back on lo; macOS's lo0 has no broadcast",
    "/dev/full": "a device every write to fails as on a full disk",
    "Xvfb": "a private X screen that xdotool types into; macOS and Windows have neither",
    "unread data after a reset": ("what a peer sent before it closed stays readable after its reset comes back; "
                                  "Windows drops it, macOS is not checked"),
}
# The fixtures that start an Xvfb (tests/xvfb.py, tests/test_ui.py): every test that uses
# one, itself or through another fixture, needs Xvfb.
XVFB_FIXTURES = ("xvfb_display", "in_process_display")


def this_platform() -> str:
    """linux, darwin or win32: sys.platform, or what CHAT_TESTS_PLATFORM pretends."""
    return os.environ.get(PLATFORM_VARIABLE) or sys.platform


def linux_needs(item: pytest.Item) -> list[str]:
    """The Linux-only things this test needs (keys of LINUX_ONLY), in that order."""
    needs = {marker.args[0] for marker in item.iter_markers("linux_only")}
    if set(XVFB_FIXTURES) & set(getattr(item, "fixturenames", ())):
        needs.add("Xvfb")
    return [need for need in LINUX_ONLY if need in needs]


def not_run_here(item: pytest.Item) -> str:
    """Why this test does not run on this platform ("not run here: needs Linux: ..."),
    or "" when it runs here."""
    needs = linux_needs(item)
    if not needs or this_platform().startswith("linux"):
        return ""
    return f"{NOT_RUN_HERE}: needs Linux: " + "; ".join(f"{need} ({LINUX_ONLY[need]})" for need in needs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "linux_only(need): the test needs something only Linux has, one of "
                                       + ", ".join(LINUX_ONLY) + " (tests/platforms.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in item.iter_markers("linux_only"):
            if len(marker.args) != 1 or marker.args[0] not in LINUX_ONLY:
                raise pytest.UsageError(f"{item.nodeid}: linux_only{marker.args!r} names none of "
                                        f"{', '.join(LINUX_ONLY)} (tests/platforms.py)")
        reason = not_run_here(item)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
