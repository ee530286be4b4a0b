"""The front ends (common/ui.py) on their own: a failing callback, refused
text, colours, emoji; and a role that leaves a refusal to its front end. The window tests open real tkinter windows on a
private Xvfb display; the terminal tests give TerminalChat a pipe for stdin.
"""
from __future__ import annotations

import gc
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref

import pytest

from common import ui
from common.messages import MAX_TEXT_BYTES, checked_text
from tests.procs import DEADLINE_SECONDS, ROOT
from tests.test_lab1 import lab  # noqa: F401  (a fixture)
from tests.xvfb import start_xvfb

FAILURES_BEFORE_STOP = 3



def turn_of(selector, front_end):
    """A role file's turn of the loop, as the four roles write it."""
    def turn(timeout):
        for key, mask in selector.select(timeout):
            key.data(mask)
            if front_end.stopped:
                return
    return turn

@pytest.fixture
def stdin_pipe(monkeypatch):
    """A pipe as the front end's stdin; yields its write end's descriptor."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        yield write_end
    os.close(write_end)


@pytest.fixture(scope="session")
def in_process_display():
    """One Xvfb for every window this test process opens itself. Tk keeps its
    connection to a display until the process ends, and exits the process
    if that display goes away: so this one outlives all of those windows."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); CI installs it")
    process, display = start_xvfb()
    yield display
    process.kill()
    process.wait()


@pytest.fixture
def window_display(in_process_display, monkeypatch):
    if ui.tk is None:
        pytest.skip("tkinter is not installed")
    monkeypatch.setenv("DISPLAY", in_process_display)
    return in_process_display


def run_with_a_failing_handler(front_end: ui.ChatWindow | ui.TerminalChat) -> list[int]:
    """Run ``front_end`` with a socket whose handler always raises; a tick
    stops the loop once the handler has failed FAILURES_BEFORE_STOP times.
    Return the number of ticks seen after the first failure."""
    readable, writer = socket.socketpair()
    writer.send(b"x")   # never read: the socket stays readable, the handler fails every round
    failures, ticks_after_failure = [], []

    def on_readable(_mask: int) -> None:
        failures.append(1)
        raise RuntimeError("a bug in a handler")

    deadline = time.monotonic() + DEADLINE_SECONDS

    def tick() -> None:
        if time.monotonic() > deadline:   # the loop stopped calling the handler: fail, do not hang
            front_end.stop()
        if failures:
            ticks_after_failure.append(1)
        if len(failures) >= FAILURES_BEFORE_STOP and ticks_after_failure:
            front_end.stop()

    with selectors.DefaultSelector() as selector:
        selector.register(readable, selectors.EVENT_READ, on_readable)
        front_end.run(selector, turn_of(selector, front_end), tick=tick, tick_interval_ms=10)
    readable.close()
    writer.close()
    assert len(failures) >= FAILURES_BEFORE_STOP
    return ticks_after_failure


@pytest.mark.points(1)
def test_terminal_loop_reports_a_failing_handler_once_and_carries_on(stdin_pipe, capsys):
    terminal = ui.TerminalChat("test", lambda text: None, lambda: None)
    assert run_with_a_failing_handler(terminal)
    stderr = capsys.readouterr().err
    assert stderr.count("internal error in") == 1, stderr
    assert "RuntimeError: a bug in a handler" in stderr


@pytest.mark.points(1)
def test_a_quit_signal_ends_the_loop_whose_handler_fails_first_every_turn_and_whose_goodbye_fails(
        stdin_pipe, capsys):
    # A starter's role: a TODO raises on a socket that stays readable, and its goodbye is a TODO too.
    def not_written(*_args: object) -> None:
        raise NotImplementedError("TODO: not written yet")

    terminal = ui.TerminalChat("test", lambda text: None, not_written)
    readable, writer = socket.socketpair()
    writer.send(b"x")   # never read
    deadline, signalled = time.monotonic() + DEADLINE_SECONDS, []

    def turn(timeout: float | None) -> None:
        # The failing handler runs first in every turn, so the wake-up socket's handler never runs.
        for key, mask in sorted(selector.select(timeout), key=lambda event: event[0].data is not not_written):
            key.data(mask)

    def tick() -> None:
        if not signalled:
            signalled.append(1)
            signal.raise_signal(signal.SIGTERM)   # `kill PID`: our handler runs, in this thread
        elif time.monotonic() > deadline:
            terminal.stop()   # the signal did not end the loop: fail, do not hang
            raise AssertionError("SIGTERM did not end the loop")

    with selectors.DefaultSelector() as selector:
        selector.register(readable, selectors.EVENT_READ, not_written)
        terminal.run(selector, turn, tick=tick, tick_interval_ms=10)
    readable.close()
    writer.close()
    stderr = capsys.readouterr().err
    assert "AssertionError" not in stderr, stderr
    # Both failures reported once each, and the program ended all the same.
    assert stderr.count("NotImplementedError: TODO: not written yet") == 2, stderr


@pytest.mark.points(1)
def test_a_handler_that_fails_on_every_turn_runs_again_only_after_a_pause(stdin_pipe, capsys):
    # A TODO that raises before it reads: its socket is ready again at once, turn after turn.
    terminal = ui.TerminalChat("test", lambda text: None, lambda: None)
    readable, writer = socket.socketpair()
    writer.send(b"x")   # never read
    failed_at = []

    def not_written(_mask: int) -> None:
        failed_at.append(time.monotonic())
        if len(failed_at) == FAILURES_BEFORE_STOP + 2:
            terminal.stop()
        raise NotImplementedError("TODO: read the socket")

    with selectors.DefaultSelector() as selector:
        selector.register(readable, selectors.EVENT_READ, not_written)
        terminal.run(selector, turn_of(selector, terminal))
    readable.close()
    writer.close()
    # The loop carried on (the chat would go on), but did not spin: a pause after each failure.
    gaps = [later - earlier for earlier, later in zip(failed_at, failed_at[1:])]
    assert min(gaps) >= 0.9 * ui.FAILED_TURN_PAUSE_SECONDS, gaps
    assert capsys.readouterr().err.count("NotImplementedError: TODO: read the socket") == 1


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_poll_survives_a_failing_handler_and_reports_it_once(window_display, capsys):
    window = ui.ChatWindow("test", lambda text: None, lambda: None, poll_interval_ms=5)
    assert run_with_a_failing_handler(window)
    stderr = capsys.readouterr().err
    assert stderr.count("internal error in") == 1, stderr
    assert "RuntimeError: a bug in a handler" in stderr


@pytest.mark.points(1)
def test_terminal_shows_why_a_line_was_not_sent_and_goes_on(stdin_pipe, capsys):
    sent = []
    terminal = ui.TerminalChat("test", lambda text: sent.append(checked_text(text)), lambda: None)
    os.write(stdin_pipe, b"bad \x1b[2J line\n" + b"x" * 1001 + b"\nfine\n")
    with selectors.DefaultSelector() as selector:
        def stop_when_sent(_mask: int) -> None:
            if sent:
                terminal.stop()
        idle, other = socket.socketpair()
        other.send(b"!")
        selector.register(idle, selectors.EVENT_READ, stop_when_sent)
        terminal.run(selector, turn_of(selector, terminal))
        idle.close()
        other.close()
    assert sent == ["fine"]
    notes = capsys.readouterr().err.splitlines()
    assert any(note.startswith("not sent: a message may not contain a control character") for note in notes)
    assert "not sent: a message is at most 1000 bytes of UTF-8" in notes


def drive(window: ui.ChatWindow, display: str, *args: str) -> None:
    """Run xdotool on ``display`` while the window handles its events (it is
    in this process, so nobody else would): xdotool's --sync waits for them."""
    process = subprocess.Popen(["xdotool", *args], env={**os.environ, "DISPLAY": display})
    deadline = time.monotonic() + DEADLINE_SECONDS
    while process.poll() is None:
        assert time.monotonic() < deadline, f"xdotool {args} did not finish"
        window._root.update()
        try:
            process.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass   # not yet: handle the window's events, then look again
    window._root.update()
    assert process.returncode == 0


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_keeps_refused_text_selected_and_clears_sent_text(window_display, capsys):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    sent = []
    window = ui.ChatWindow("refusal test", lambda text: sent.append(checked_text(text)),
                           lambda: None, poll_interval_ms=5)
    entry = window._entry
    try:
        drive(window, window_display, "search", "--sync", "--onlyvisible", "--name", "^refusal test$",
              "windowfocus", "--sync", "%1")
        for refused in ("x" * 1001, "with a \x07 bell"):
            entry.delete(0, "end")
            entry.insert(0, refused)
            drive(window, window_display, "key", "Return")
            assert entry.get() == refused   # kept...
            assert (entry.index("sel.first"), entry.index("sel.last")) == (0, len(refused))  # ...selected
        drive(window, window_display, "type", "good")   # typing replaces the selection
        drive(window, window_display, "key", "Return")
        assert sent == ["good"]
        assert entry.get() == ""
        drive(window, window_display, "key", "Return")
    finally:
        window._root.destroy()
    notes = capsys.readouterr().err.splitlines()
    assert "not sent: a message is at most 1000 bytes of UTF-8" in notes
    assert any(note.startswith("not sent: a message may not contain a control character") for note in notes)
    assert notes[-1] == "nothing sent: the line is empty"


def tags_of(window: ui.ChatWindow, line: int, text: str) -> set[str]:
    """The tags on the first character of ``text`` in transcript line ``line``,
    but "line", which every character has (it indents a wrapped line)."""
    content = window._transcript.get(f"{line}.0", f"{line}.end")
    assert text in content, content
    tags = set(window._transcript.tag_names(f"{line}.{content.index(text)}"))
    assert "line" in tags
    return tags - {"line"}


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_colours_names_in_order_of_appearance_and_only_the_name(window_display, capsys):
    window = ui.ChatWindow("test", lambda text: None, lambda: None, poll_interval_ms=5)
    try:
        window.set_members(["server"])
        names = ["alice", "carol", "dave"] + [f"user{number}" for number in range(20)]
        for seq, name in enumerate(names, start=1):
            window.show_text(f"#{seq} * {name} joined", name)
        window.show_text("#24 carol: hi alice \N{GRINNING FACE}", "carol")
        window.show_text("~#25 (hidden: a message from someone you ignore)", "dave")
        window.show_text("@alice -> carol: psst", "alice")
        window.set_members(["server", "alice", "carol"])
        window._root.update()   # the lines are drawn once Tk is idle, all in one insert
        # Different colours for every name, the server first, then in order of appearance.
        assert [window.colour_index(name) for name in ["server", *names]] == list(range(24))
        assert tags_of(window, 2, "carol") == {"sender2"}
        assert tags_of(window, 24, "carol") == {"sender2"}
        assert tags_of(window, 24, ": hi alice") == set()    # the text: not bold, not coloured
        assert tags_of(window, 24, "#24") == set()
        assert tags_of(window, 25, "hidden") == {"hidden"}
        assert tags_of(window, 26, "alice") == {"sender1"}
        assert tags_of(window, 26, " -> carol") == set()
        assert window._transcript.get("24.0", "24.end") == "#24 carol: hi alice [U+1F600]"
        assert window._members.get(0, "end") == ("server", "alice", "carol")
        assert window._members.itemcget(2, "foreground") == ui.SENDER_COLOURS[2]
        window.session_over("the server closed the connection")
        window._root.update()
        assert window._members.get(0, "end") == ()
    finally:
        window._root.destroy()
    # stdout keeps the real character: only the screen gets the placeholder.
    assert "#24 carol: hi alice \N{GRINNING FACE}" in capsys.readouterr().out.splitlines()


@pytest.mark.points(1)
def test_colours_repeat_only_past_the_palette():
    terminal = ui.TerminalChat("test", lambda text: None, lambda: None)
    indexes = [terminal.colour_index(f"user{number}") for number in range(len(ui.SENDER_COLOURS) + 1)]
    assert indexes[:-1] == list(range(len(ui.SENDER_COLOURS)))
    assert indexes[-1] == 0
    assert terminal.colour_index("user3") == 3   # the same name keeps its colour
    assert len(set(ui.SENDER_COLOURS)) == len(ui.SENDER_COLOURS) >= 30


@pytest.mark.network
@pytest.mark.points(1)
def test_lab1_refused_line_is_explained_and_the_chat_goes_on(lab):
    server = lab.start_server()
    alice = lab.logged_in_client("alice", "--register")
    alice.send_line("x" * (MAX_TEXT_BYTES + 1))
    alice.wait_for_stderr(rf"^not sent: a message is at most {MAX_TEXT_BYTES} bytes of UTF-8$")
    server.send_line("bell \x07 here")
    server.wait_for_stderr(r"^not sent: a message may not contain a control character \(U\+0007\)$")
    alice.send_line("still here")
    server.wait_for_stdout(r"^alice: still here$")
    alice.wait_for_stdout(r"^alice: still here$")   # its own line: a pipe of its own, read by a thread
    assert server.stdout_lines == ["alice: still here"]
    assert alice.stdout_lines == ["alice: still here"]


def read_all(reader: ui.StdinReader) -> bytes:
    """Everything the reader hands over, to the end of stdin (b"" from the socket)."""
    data = bytearray()
    reader.chunks.setblocking(True)
    reader.chunks.settimeout(DEADLINE_SECONDS)
    while chunk := reader.chunks.recv(4096):
        data += chunk
    return bytes(data)


@pytest.mark.points(1)
def test_stdin_reader_hands_over_every_byte_in_order(stdin_pipe):
    reader = ui.StdinReader()
    # More than a socketpair buffers: the thread must wait for the loop, never drop.
    lines = b"".join(b"line %d\n" % number for number in range(100_000))
    writer = threading.Thread(target=os.write, args=(stdin_pipe, lines))
    writer.start()
    received = bytearray()
    reader.chunks.setblocking(True)
    reader.chunks.settimeout(DEADLINE_SECONDS)
    while len(received) < len(lines):
        received += reader.chunks.recv(4096)
    writer.join(DEADLINE_SECONDS)
    assert bytes(received) == lines
    reader.close()


@pytest.mark.points(1)
@pytest.mark.parametrize("stdin", ["closed", "none"])
def test_stdin_reader_reads_a_closed_or_missing_stdin_as_empty(monkeypatch, stdin):
    if stdin == "none":
        monkeypatch.setattr(sys, "stdin", None)
    else:
        read_end, write_end = os.pipe()
        os.close(write_end)
        closed = os.fdopen(read_end, "rb", buffering=0)
        closed.close()
        monkeypatch.setattr(sys, "stdin", closed)
    assert read_all(ui.StdinReader()) == b""


@pytest.mark.points(1)
def test_stdin_reader_takes_the_password_line_only_and_leaves_the_rest_for_the_loop(stdin_pipe):
    reader = ui.StdinReader()
    os.write(stdin_pipe, b"secret\r\nfirst line\nsecond")
    assert reader.read_line(0.05) == "secret"
    threading.Thread(target=os.write, args=(stdin_pipe, b" half\n")).start()
    received = b""
    reader.chunks.setblocking(True)
    reader.chunks.settimeout(DEADLINE_SECONDS)
    while not received.endswith(b"half\n"):
        received += reader.chunks.recv(4096)
    assert received == b"first line\nsecond half\n"
    reader.close()


@pytest.mark.points(1)
def test_terminal_keeps_lines_waiting_while_input_is_off_and_quits_at_the_end(stdin_pipe):
    sent, quits = [], []
    terminal = ui.TerminalChat("test", sent.append, lambda: quits.append(1))
    terminal.set_input_enabled(False)
    os.write(stdin_pipe, b"one\ntwo\n")
    with selectors.DefaultSelector() as selector:
        login, server = socket.socketpair()
        turns = []

        def on_login(_mask: int) -> None:   # the "login" arrives after two turns with input off
            turns.append(1)
            if len(turns) == 2:
                assert sent == []   # nothing taken while input was off
                login.recv(1)
                terminal.set_input_enabled(True)
                os.write(stdin_pipe, b"three\n/quit\nnever sent\n")

        server.send(b"x")
        selector.register(login, selectors.EVENT_READ, on_login)
        terminal.run(selector, turn_of(selector, terminal))
        login.close()
        server.close()
    assert sent == ["one", "two", "three"]
    assert quits == [1]


@pytest.mark.points(1)
def test_stdin_reader_thread_never_keeps_a_program_alive():
    # A program whose stdin is a pipe nobody writes to or closes: the reader
    # blocks in read() for good, and the program must still end.
    code = ("import sys; from common import ui; ui.StdinReader(); "
            "print('main thread done', flush=True)")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=DEADLINE_SECONDS)
    finally:
        process.kill()
        process.stdin.close()
    assert process.returncode == 0, err
    assert out == b"main thread done\n"


# --- Keys in each platform's habits (the platform is set, not detected: ui.PLATFORM) ------------

# The keys Tk itself gives Cut, Copy and Paste on each platform (Tk 8.6's library/tk.tcl):
# a key of ours must not be one of them, or the entry box would cut its text on that key.
TK_CLIPBOARD_KEYS = {
    "darwin": {"<Command-Key-x>", "<Key-F2>", "<Command-Key-c>", "<Key-F3>", "<Command-Key-v>", "<Key-F4>"},
    "win32": {"<Control-Key-x>", "<Shift-Key-Delete>", "<Control-Key-c>", "<Control-Key-Insert>",
              "<Control-Key-v>", "<Shift-Key-Insert>"},
    "linux": {"<Control-Key-x>", "<Key-F20>", "<Control-Key-c>", "<Key-F16>", "<Control-Key-v>", "<Key-F18>"},
}


@pytest.mark.gui
@pytest.mark.points(1)
@pytest.mark.parametrize("platform", ["linux", "win32", "darwin"])
def test_the_wire_key_is_no_cut_copy_or_paste_of_the_platform_and_its_label_names_it(
        window_display, monkeypatch, platform):
    monkeypatch.setattr(ui, "PLATFORM", platform)
    key, name = ui.wire_toggle_key()
    assert key not in TK_CLIPBOARD_KEYS[platform] and f"<Key-{name}>" not in TK_CLIPBOARD_KEYS[platform]
    window = ui.ChatWindow("keys test", lambda text: None, lambda: None, poll_interval_ms=5)
    try:
        assert window._wire_toggle.cget("text") == f"Show the wire ({name})"
        assert f"<Key-{name}>" in window._root.bind()
        has_mac_quit = bool(window._root.tk.call("info", "commands", "::tk::mac::Quit"))
        assert has_mac_quit is (platform == "darwin")
    finally:
        window._root.destroy()


def run_window_until_quit(window: ui.ChatWindow, action) -> None:
    """Run the window's loop, do ``action()`` from a Tk timer, and return when
    the loop ends; fail (closing the window) if it has not by the deadline."""
    idle, other = socket.socketpair()
    with selectors.DefaultSelector() as selector:
        selector.register(idle, selectors.EVENT_READ, lambda _mask: None)
        window._root.after(10, action)
        window._root.after(int(DEADLINE_SECONDS * 1000), window.stop)
        started = time.monotonic()
        window.run(selector, turn_of(selector, window))
    idle.close()
    other.close()
    assert time.monotonic() - started < DEADLINE_SECONDS, "the window did not quit"


@pytest.mark.gui
@pytest.mark.points(1)
@pytest.mark.parametrize("how", ["Cmd-Q", "the close button"])
def test_mac_cmd_q_and_the_close_button_quit_as_ctrl_x_does(window_display, monkeypatch, how):
    monkeypatch.setattr(ui, "PLATFORM", "darwin")
    quits = []
    window = ui.ChatWindow("quit test", lambda text: None, lambda: quits.append(how), poll_interval_ms=5)
    if how == "Cmd-Q":   # what macOS's application menu calls, and its key
        run_window_until_quit(window, lambda: window._root.tk.call("::tk::mac::Quit"))
    else:
        run_window_until_quit(window, lambda: window._root.tk.call(window._root.protocol("WM_DELETE_WINDOW")))
    assert quits == [how]   # on_quit, where a role says goodbye, once


@pytest.mark.gui
@pytest.mark.points(1)
@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_ctrl_x_in_the_entry_quits_without_cutting_its_text(window_display, monkeypatch, platform):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    monkeypatch.setattr(ui, "PLATFORM", platform)
    quits = []
    window = ui.ChatWindow("cut test", lambda text: None, lambda: quits.append(1), poll_interval_ms=5)
    try:
        window._root.clipboard_clear()
        window._root.clipboard_append("on the clipboard before")
        window._entry.insert(0, "half a thought")
        window._entry.selection_range(0, "end")   # a Cut would take exactly this
        drive(window, window_display, "search", "--sync", "--onlyvisible",
              "--name", "^cut test$", "windowfocus", "--sync", "%1")
        drive(window, window_display, "key", "ctrl+x")
        assert quits == [1]
        assert window._entry.get() == "half a thought"
        assert window._root.clipboard_get() == "on the clipboard before"
    finally:
        window._root.destroy()


@pytest.mark.gui
@pytest.mark.points(1)
@pytest.mark.parametrize("platform", ["win32", "linux"])
def test_a_window_on_windows_asks_to_be_drawn_at_the_screens_scale(window_display, monkeypatch, platform):
    import ctypes
    monkeypatch.setattr(ui, "PLATFORM", platform)
    calls = []

    class Shcore:
        def SetProcessDpiAwareness(self, value):   # noqa: N802 (Windows' name)
            calls.append(("SetProcessDpiAwareness", value, ui.tk._default_root))

    monkeypatch.setattr(ctypes, "OleDLL", lambda name: Shcore() if name == "shcore" else None, raising=False)
    window = ui.ChatWindow("dpi test", lambda text: None, lambda: None, poll_interval_ms=5)
    window._root.destroy()
    # Before the window exists (Windows fixes a process's scale at its first window), on Windows only.
    assert calls == ([("SetProcessDpiAwareness", ui.PROCESS_SYSTEM_DPI_AWARE, None)] if platform == "win32" else [])


@pytest.mark.gui
@pytest.mark.points(1)
def test_keypad_enter_sends_and_pasted_lines_are_sent_one_a_line_each_checked(window_display, capsys):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    sent = []
    window = ui.ChatWindow("paste test", lambda text: sent.append(checked_text(text)),
                           lambda: None, poll_interval_ms=5)
    entry = window._entry
    try:
        drive(window, window_display, "search", "--sync", "--onlyvisible",
              "--name", "^paste test$", "windowfocus", "--sync", "%1")
        drive(window, window_display, "type", "by the keypad")
        drive(window, window_display, "key", "KP_Enter")
        assert sent == ["by the keypad"]
        assert entry.get() == ""
        # Typed, then pasted: the first pasted line ends the typed one; the last waits in the box.
        entry.insert(0, "typed and ")
        window._root.clipboard_clear()
        window._root.clipboard_append("pasted\r\nwith a \x07 bell\n\nthird\nto be finished")
        drive(window, window_display, "key", "ctrl+v")
        assert sent == ["by the keypad", "typed and pasted", "third"]
        assert entry.get() == "to be finished"
        window._root.clipboard_clear()
        one_line = "one line"
        window._root.clipboard_append(one_line)   # no line end: the entry's own paste
        drive(window, window_display, "key", "ctrl+v")
        assert entry.get() == "to be finished" + one_line
        assert len(sent) == 3
    finally:
        window._root.destroy()
    notes = capsys.readouterr().err.splitlines()
    assert any(note.startswith("not sent: a message may not contain a control character") for note in notes)


def ask_password_within_the_deadline(window: ui.ChatWindow) -> str | None:
    """The password dialog's answer; "too late" if it was still open at the
    deadline (and then closed by force, so that the test goes on)."""
    too_late = []

    def close_by_force():
        too_late.append(True)
        for child in window._root.winfo_children():
            if isinstance(child, ui.tk.Toplevel):
                child.destroy()
    deadline = window._root.after(int(DEADLINE_SECONDS * 1000), close_by_force)
    answer = window.ask_password("Password for alice")
    window._root.after_cancel(deadline)
    return "too late" if too_late else answer


def type_once_focused(root: ui.tk.Tk, xdotool: list[subprocess.Popen], env: dict[str, str]) -> None:
    """A Tk timer (the dialog must handle its events meanwhile): once the first
    xdotool has focused the dialog, type a password and Ctrl-X at the focus, as a
    user types (a window given would get synthetic events)."""
    if xdotool[-1].poll() is None:
        root.after(10, type_once_focused, root, xdotool, env)
    else:
        xdotool.append(subprocess.Popen(["xdotool", "key", *"secret", "ctrl+x"], env=env))


@pytest.mark.gui
@pytest.mark.points(1)
def test_the_close_button_and_ctrl_x_end_the_password_dialog_and_send_nothing(window_display):
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt-get install xdotool); CI installs it")
    quits = []
    window = ui.ChatWindow("dialog test", lambda text: None, lambda: quits.append(1), poll_interval_ms=5)
    root = window._root
    try:
        # The close button: the dialog goes, and no goodbye is said (there is nobody yet).
        root.after(10, lambda: root.tk.call(root.protocol("WM_DELETE_WINDOW")))
        assert ask_password_within_the_deadline(window) is None, "the close button did not close the dialog"
        # Ctrl-X typed into the dialog, as the user would: it quits, and cuts nothing.
        root.clipboard_clear()
        root.clipboard_append("on the clipboard before")
        env = {**os.environ, "DISPLAY": window_display}
        xdotool = [subprocess.Popen(["xdotool", "search", "--sync", "--onlyvisible",
                                    "--name", "^dialog test: password$",
                                     "windowfocus", "--sync", "%1"], env=env)]
        root.after(10, type_once_focused, root, xdotool, env)
        assert ask_password_within_the_deadline(window) is None, "Ctrl-X did not close the dialog"
        assert [process.wait(DEADLINE_SECONDS) for process in xdotool] == [0, 0]
        assert quits == []
        assert root.clipboard_get() == "on the clipboard before"
    finally:
        root.destroy()



def run_turns(front_end: ui.ChatWindow | ui.TerminalChat, turns: list) -> None:
    """Run ``front_end``'s loop for ``len(turns)`` turns that each find a socket
    readable, calling ``turns[n]()`` in the n-th; stop after the last."""
    readable, writer = socket.socketpair()
    writer.send(b"x" * len(turns))   # one byte per turn: the socket stays readable until the last
    done = []
    deadline = time.monotonic() + DEADLINE_SECONDS

    def on_readable(_mask: int) -> None:
        readable.recv(1)
        turns[len(done)]()
        done.append(1)
        if len(done) == len(turns):
            front_end.stop()

    def tick() -> None:
        if time.monotonic() > deadline:   # the loop stopped calling the handler: fail, do not hang
            front_end.stop()

    with selectors.DefaultSelector() as selector:
        selector.register(readable, selectors.EVENT_READ, on_readable)
        front_end.run(selector, turn_of(selector, front_end), tick=tick, tick_interval_ms=100)
    readable.close()
    writer.close()
    assert len(done) == len(turns), "the loop stopped calling the handler"


def transcript_lines(window: ui.ChatWindow) -> list[str]:
    return window._transcript.get("1.0", "end-1c").splitlines()


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_keeps_its_newest_lines_and_draws_each_poll_in_one_insert(window_display, capsys):
    bound, per_turn = 50, 120
    window = ui.ChatWindow("bound test", lambda text: None, lambda: None, poll_interval_ms=5, window_lines=bound)
    inserts, drawn = [], []
    real_insert = window._transcript.insert
    window._transcript.insert = lambda *args: (inserts.append(len(args)), real_insert(*args))[1]
    said = iter(range(1, 10 * bound + 1))

    def say_many(count: int) -> None:
        for seq in [next(said) for _ in range(count)]:
            window.show_text(f"#{seq} user{seq % 7}: line {seq}", f"user{seq % 7}")

    run_turns(window, [lambda: say_many(per_turn)] * 3 + [lambda: say_many(10 * bound - 3 * per_turn),
                                                          lambda: drawn.extend(transcript_lines(window))])
    del window._transcript.insert   # the counter refers to the widget: no cycle left behind
    assert len(inserts) == 4   # one insert per poll that showed lines (the last showed none), not one per line
    assert len(drawn) == bound
    assert drawn[0] == f"#{9 * bound + 1} user{(9 * bound + 1) % 7}: line {9 * bound + 1}"
    assert drawn[-1] == f"#{10 * bound} user{10 * bound % 7}: line {10 * bound}"   # the newest, in order
    out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
    assert len(out) == 10 * bound   # stdout keeps every line


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_trims_to_its_bound_and_shows_the_newest_lines(window_display, capsys):
    bound = 40
    window = ui.ChatWindow("trim test", lambda text: None, lambda: None, poll_interval_ms=5, window_lines=bound)
    try:
        for seq in range(1, 10 * bound + 1):
            window.show_text(f"#{seq} alice: line {seq}", "alice")
            if seq % 37 == 0:
                window._root.update()   # drawn when Tk is idle: the widget fills, then trims
        window.show_note("a note")
        window._root.update()
        lines = transcript_lines(window)
        assert len(lines) == bound
        assert lines[-2:] == [f"#{10 * bound} alice: line {10 * bound}", "a note"]
        assert lines[0] == f"#{9 * bound + 2} alice: line {9 * bound + 2}"   # the newest, in order
    finally:
        window._root.destroy()


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_shows_hidden_messages_in_a_row_as_one_line_that_grows(window_display, capsys):
    window = ui.ChatWindow("hidden test", lambda text: None, lambda: None, poll_interval_ms=5)
    try:
        window.show_hidden(12, "mallory")
        window._root.update()   # drawn: the run's line is in the widget ...
        for seq in range(13, 17):
            window.show_hidden(seq, "mallory")
        window._root.update()   # ... and grows there, in place
        assert transcript_lines(window) == ["~#12-#16 (5 hidden messages from people you ignore)"]
        for seq in range(17, 20):
            window.show_hidden(seq, "mallory")
        window.show_text("#20 server: hello", "server")
        window.show_hidden(21, "mallory")
        window._root.update()
        assert transcript_lines(window) == ["~#12-#19 (8 hidden messages from people you ignore)",
                                            "#20 server: hello", "~#21 (hidden: a message from someone you ignore)"]
        assert tags_of(window, 1, "~#12") == {"hidden"}
        assert window.colour_index("mallory") == 0   # hidden, the name still took its colour first
    finally:
        window._root.destroy()
    # stdout cannot change a line: the run's first line at once, its whole line when it ended.
    assert capsys.readouterr().out.splitlines() == [
        "~#12 (hidden: a message from someone you ignore)", "~#12-#19 (8 hidden messages from people you ignore)",
        "#20 server: hello", "~#21 (hidden: a message from someone you ignore)"]


@pytest.mark.points(1)
def test_terminal_prints_a_growing_run_of_hidden_messages_at_its_start_its_end_and_now_and_then(
        stdin_pipe, capsys, monkeypatch):
    hidden_one, hidden_run = "(hidden: a message from someone you ignore)", "hidden messages from people you ignore"
    terminal = ui.TerminalChat("test", lambda text: None, lambda: None)
    run_turns(terminal, [lambda: [terminal.show_hidden(seq, "mallory") for seq in range(1, 102)]])
    # 101 in a row: the first line at once, and the run's once more, after the turn if it took
    # HIDDEN_RUN_PRINT_SECONDS, else at the loop's end: never once per message.
    assert capsys.readouterr().out.splitlines() == [f"~#1 {hidden_one}", f"~#1-#101 (101 {hidden_run})"]
    monkeypatch.setattr(ui, "HIDDEN_RUN_PRINT_SECONDS", 0)   # every turn is now that long after a print
    terminal = ui.TerminalChat("test", lambda text: None, lambda: None)
    run_turns(terminal, [lambda seq=seq: terminal.show_hidden(seq, "mallory") for seq in (5, 6, 7)]
              + [lambda: terminal.show_note("a note"), lambda: terminal.show_hidden(9, "mallory")])
    assert capsys.readouterr().out.splitlines() == [
        f"~#5 {hidden_one}", f"~#5-#6 (2 {hidden_run})", f"~#5-#7 (3 {hidden_run})", f"~#9 {hidden_one}"]


def run_a_window_and_drop_it() -> weakref.ref:
    """A window that runs one turn (its wire view turned on and off first) and is
    then dropped; the reference says whether it is gone."""
    window = ui.ChatWindow("freed test", lambda text: None, lambda: None, poll_interval_ms=5)
    window._on_wire_key(None)
    window._on_wire_key(None)
    run_turns(window, [lambda: window.show_note("one turn")])
    return weakref.ref(window)


@pytest.mark.gui
@pytest.mark.points(1)
def test_a_window_that_ran_is_freed_where_it_is_dropped_never_by_another_threads_collector(
        window_display, monkeypatch):
    # A window in a reference cycle would be freed by the garbage collector, on whichever
    # thread it runs: there its tkinter objects would call Tcl ("main thread is not in main
    # loop"), and freeing its Tcl interpreter aborts the process.
    gc.collect()   # what earlier tests left is collected here, on this thread
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    gone = run_a_window_and_drop_it()
    assert gone() is None   # freed at once, on this thread: nothing is left for a collector elsewhere
    collector = threading.Thread(target=gc.collect)
    collector.start()
    collector.join(DEADLINE_SECONDS)
    assert [str(report.exc_value) for report in unraisable] == []


@pytest.mark.gui
@pytest.mark.points(1)
def test_window_serves_a_socket_as_soon_as_it_is_ready_not_at_its_next_poll(window_display):
    # The window's poll comes once an hour here: only the socket's readiness can bring its handler.
    window = ui.ChatWindow("ready test", lambda text: None, lambda: None, poll_interval_ms=3_600_000)
    readable, writer = socket.socketpair()
    heard, deadline = [], time.monotonic() + DEADLINE_SECONDS

    def on_readable(_mask: int) -> None:
        heard.append(readable.recv(1))
        window.stop()

    def tick() -> None:   # the role's own timer makes the socket ready
        if writer.send(b"x") and time.monotonic() > deadline:
            window.stop()

    with selectors.DefaultSelector() as selector:
        selector.register(readable, selectors.EVENT_READ, on_readable)
        window.run(selector, turn_of(selector, window), tick=tick, tick_interval_ms=50)
    readable.close()
    writer.close()
    assert heard == [b"x"]
