"""The two front ends of every role: a tkinter window and a headless terminal.

Both have one interface, so a role file never asks which one it has::

    ui = open_front_end(title, on_submit, on_quit, headless=..., poll_interval_ms=..., window_lines=...)
    ui.show_line(sender, text)   # one transcript line; each sender has its own colour
    ui.show_text(line, sender)   # a line formatted already ("#12 alice: hi"), the name in colour
    ui.show_hidden(seq, sender)  # a room message from someone ignored: runs of them are one line
    ui.show_note(text)           # something happened: "alice left"
    ui.set_status(text)          # connected to whom, encrypted or not
    ui.set_members(names)        # who is in the room: a list beside the transcript (Lab 2)
    ui.ask_password(prompt)      # a Tk dialog; getpass in a terminal; a pipe's first line
    ui.set_input_enabled(flag)   # take lines from the user now, or not yet
    ui.session_over(text)        # the peer is gone: show why, and let the user leave
    ui.run(selector, turn, tick=..., tick_interval_ms=...)   # until stop() or quit
    ui.stop()

The wire view (common/wire.py) shows every record and datagram as it crosses
the wire. A role's command line gets ``--wire`` (and ``--headless``) from
``add_front_end_options(parser)``: given, the view is on from the start, its
lines on stdout as "wire: ..." (in both front ends: a test that reads chat
lines skips them by that prefix). A window also has a toggle, "Show the wire"
(or F2; F6 on macOS, whose Tk makes F2 a Cut), and shows the lines in its
transcript in small grey type. They never count as transcript lines.

``on_submit(text)`` runs when the user enters a line; ``on_quit()`` when the
user leaves (Ctrl-X, closing the window, Cmd-Q on macOS, a line "/quit", the
end of stdin, Ctrl-C or SIGTERM); the loop ends right after it.

Both write the transcript to stdout, one flushed line per message, and notes
and status to stderr. In the terminal that is the whole interface; the window
shows the same lines too, so a script (or the grader) can follow a GUI session.
Writing there never raises into the role (write_line): a stream that fails
is said once on stderr and dropped, and what a terminal cannot encode
becomes "?".

If ``on_submit`` raises ProtocolError (the text may not be sent: too long, a
control character), the front end shows "not sent: <reason>"; a window keeps
the text in its entry box, selected, for the user to fix.

The loop is the role file's own ``turn(timeout)``: select, then run each
ready key's handler (``key.data``, see net.py). A front end only decides
when to call it, and with what timeout. The terminal calls it with a
blocking timeout. A window must not block for long (Tk must keep drawing
and reading the keyboard): it calls it with a timeout of POLL_INTERVAL_MS,
then lets Tk handle what came in meanwhile (``root.update()``). So a packet
is served the moment it arrives, in a window as in the terminal, and a key
press waits at most POLL_INTERVAL_MS. A window draws what a turn showed
once the turn is over, in one insert into its transcript widget, and keeps
only its newest ``window_lines`` lines (WINDOW_LINES): a busy room costs a
window one redraw per turn, not one per line, and a long class never makes
it slower.
An exception escaping a turn is a bug: it is reported once on stderr and the
loop carries on (the selector reports the unhandled sockets again next
turn), so one bug never freezes a window.

The selector watches sockets only, as Windows requires. stdin is read by a
thread (StdinReader) that passes its chunks through a socketpair, and a
signal (Ctrl-C, SIGTERM) writes a byte into another socketpair: both are
sockets the loop watches like any other. While input is off (before a
login), the loop leaves the stdin socket unread and its lines wait there, in
order. A password asked for in the terminal while stdin is no terminal (a
pipe, a file) is stdin's first line: getpass would swallow the lines after it.

Two environment variables serve the demo (lab2_udp/demo.py) and are not
needed otherwise: CHAT_WINDOW_GEOMETRY places a window ("640x360+0+0", Tk's
geometry syntax), and CHAT_WINDOW_STDIN=1 makes a window also take lines
from stdin, as the terminal does, so a script can type into it.
"""
from __future__ import annotations

import argparse
import getpass
import io
import os
import re
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Callable

from common import net, wire
from common.errors import ProtocolError
from common.transcript import HiddenRun

try:
    import tkinter as tk
    from tkinter import scrolledtext, simpledialog
except ImportError:  # Python without Tk (python3-tk not installed): terminal only
    tk = None

QUIT_COMMAND = "/quit"
CTRL_X = b"\x18"
STDIN_READ_BYTES = 4096
QUIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)   # Ctrl-C, and `kill` or a closing session
# Readable on white and told apart easily, enough for a class. Names get them
# in order of first appearance; every Lab 2 screen shows the same transcript,
# so every screen gives a name the same colour. Past the end, they repeat.
SENDER_COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#7f7f00", "#393b79", "#637939", "#ad494a", "#7b4173", "#005f5f", "#b8860b", "#4b0082",
    "#c71585", "#2f4f4f", "#006400", "#8b0000", "#483d8b", "#a0522d", "#008b8b", "#556b2f",
    "#d2691e", "#6a5acd", "#2e8b57", "#800080", "#b22222", "#4682b4",
)
TERMINAL_COLOURS = ("34", "31", "32", "35", "33", "36", "94", "91", "92", "95", "93", "96")  # ANSI
MEMBER_LIST_WIDTH_CHARS = 12
WRAP_INDENT_PIXELS = 24
PROMPT_SIGNAL_CHECK_MS = 100   # how often a password dialog looks for Ctrl-C or SIGTERM
# A window keeps the newest lines of its transcript only (WINDOW_LINES in .env): a 3-hour
# class would otherwise grow the widget, and the cost of every redraw, without end.
DEFAULT_WINDOW_LINES = 3000
# While a run of hidden lines grows, stdout gets its line again at most this often.
HIDDEN_RUN_PRINT_SECONDS = 1.0
# After a turn of the loop that raised, the next waits this long. A handler that raises
# before it reads its socket (a TODO's NotImplementedError, say) finds the socket ready
# again at once: without the pause the loop would run it again and again, a core at 100%.
FAILED_TURN_PAUSE_SECONDS = 0.05
# The "Show the wire" box keeps its state in a Tcl variable of the window's own
# interpreter, named, rather than in a tkinter BooleanVar, which calls Tcl when Python
# frees it: a window freed off the Tk thread would fail there (see ChatWindow.__init__).
WIRE_SHOWN_VARIABLE = "wire_shown"
DEFAULT_GEOMETRY = "560x400"
GEOMETRY_VARIABLE = "CHAT_WINDOW_GEOMETRY"
WINDOW_STDIN_VARIABLE = "CHAT_WINDOW_STDIN"
# Tk 8.6 stores text as UTF-16 and cannot draw a character beyond U+FFFF (most
# emoji): the window shows "[U+1F600]" instead. stdout keeps the real text.
TK_SHOWS_ALL_CHARACTERS = tk is not None and tk.TkVersion >= 8.7
WIRE_PREFIX = "wire: "     # every wire line on stdout starts so: never a chat line's start
SCREEN_GONE = "{stream} cannot be written ({reason}): its lines are dropped from now on; the chat goes on"
# Whose habits a window follows: "darwin" (macOS), "win32" (Windows), or another
# (Linux, the BSDs). Read when a window opens, so a test may set another.
PLATFORM = sys.platform
PROCESS_SYSTEM_DPI_AWARE = 1   # Windows' SetProcessDpiAwareness: draw at the screen's own scale


def wire_toggle_key() -> tuple[str, str]:
    """The key that shows or hides the wire view: (its Tk event, its name for people)."""
    # macOS's Tk makes F2 a Cut (and F3, F4 Copy and Paste): there, F2 would
    # also cut the selected text out of the entry box. F6 means nothing to it.
    return ("<F6>", "F6") if PLATFORM == "darwin" else ("<F2>", "F2")


def add_front_end_options(parser: argparse.ArgumentParser) -> None:
    """Give a role's command line ``--headless`` (no window: stdin and stdout)
    and ``--wire``: show every record and datagram as it crosses the wire
    (common/wire.py), from the very first handshake record."""
    parser.add_argument("--headless", action="store_true",
                        help="no window: chat through stdin and stdout (the default without a display)")
    parser.add_argument("--wire", action=_WireOption, nargs=0, default=False,
                        help="show every record and datagram as it crosses the wire (lines 'wire: ...' "
                             f"on stdout; a window's {wire_toggle_key()[1]} toggles it)")


class _WireOption(argparse.Action):
    """--wire turns the wire view on as the command line is read: the first
    records go out before any front end exists. A window takes it over."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        wire.turn_on(show_wire_on_stdout)


def show_wire_on_stdout(line: str) -> None:
    """Print one wire line, with its prefix, and flush it at once."""
    write_line(WIRE_PREFIX + line)


def write_line(text: str, stream_name: str = "stdout", end: str = "\n") -> None:
    """Write ``text`` and ``end`` to sys.stdout (or sys.stderr) and flush at
    once; never raise. The screen is one of a role's outputs, not its life: a
    stdout piped into ``head`` that has exited, a full disk behind a redirect,
    a closed descriptor must never cost the peer its chat."""
    stream = getattr(sys, stream_name)
    if stream is None or stream_name in _gone:   # no such stream at all, or it failed already
        return
    if stream_name not in _forgiving:
        _forgiving.add(stream_name)
        # A terminal that is not UTF-8 (LANG=C, ISO-8859-1) cannot encode every
        # character: show it as "?" rather than lose the whole line. The
        # transcript's hash is computed on the real text, never on the screen.
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="replace")
            except (ValueError, OSError):   # a stream closed already: the write below says so
                pass
    try:
        stream.write(text + end)
        stream.flush()   # a pipe would otherwise hold the line, and whoever reads it would wait
    except (OSError, ValueError) as error:   # EPIPE, ENOSPC, EBADF; ValueError: a closed file
        _stream_gone(stream_name, stream, error)


_forgiving: set[str] = set()   # streams set to replace what they cannot encode
_gone: set[str] = set()        # streams that failed once: their output is dropped


def _stream_gone(stream_name: str, stream: io.TextIOBase, error: Exception) -> None:
    """Drop every later write to ``stream_name``, and say so once on stderr."""
    _gone.add(stream_name)
    # Python ignores SIGPIPE, so a write to a pipe nobody reads raises
    # BrokenPipeError; and at exit Python flushes what is still buffered, which
    # would fail again ("Exception ignored ... BrokenPipeError"). Pointing the
    # descriptor at the null device, as Python's documentation of SIGPIPE
    # suggests, lets that last flush succeed, into nothing.
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError):   # no descriptor to redirect (closed): exit skips a closed file
        pass
    if stream_name != "stderr":
        write_line(SCREEN_GONE.format(stream=stream_name, reason=net.describe_error(error)), "stderr")


def open_front_end(title: str, on_submit: Callable[[str], None], on_quit: Callable[[], None],
                   *, headless: bool, poll_interval_ms: int,
                   window_lines: int = DEFAULT_WINDOW_LINES) -> ChatWindow | TerminalChat:
    """Return a ChatWindow, or a TerminalChat if ``headless`` is asked for or no
    window can be opened (no display, no Tk); that choice is noted on stderr."""
    reason = None
    if not headless:
        if tk is None:
            reason = "tkinter is not installed"
        elif PLATFORM.startswith("linux") and not (
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            reason = "no display (DISPLAY is not set)"
        else:
            try:
                return ChatWindow(title, on_submit, on_quit, poll_interval_ms=poll_interval_ms,
                                  window_lines=window_lines)
            except tk.TclError as error:
                reason = f"no window could be opened ({error})"
    if reason:
        write_line(f"{reason}: running in headless terminal mode", "stderr")
    return TerminalChat(title, on_submit, on_quit)


def _sharp_on_high_dpi_screens() -> None:
    """On Windows, say that we draw at the screen's scale before Tk opens a
    window; else Windows draws it small and scales it up, blurred. As IDLE does."""
    if PLATFORM != "win32":
        return
    try:
        import ctypes  # here, not on top: only Windows needs it, and a Python may lack it
        ctypes.OleDLL("shcore").SetProcessDpiAwareness(PROCESS_SYSTEM_DPI_AWARE)
    except (ImportError, AttributeError, OSError):
        pass   # Windows before 8.1 has no shcore, or the setting was made already: blurred but working


def displayable(text: str) -> str:
    """``text`` as the window can draw it: characters Tk cannot show become "[U+1F600]"."""
    if TK_SHOWS_ALL_CHARACTERS:
        return text
    return "".join(char if ord(char) <= 0xFFFF else f"[U+{ord(char):X}]" for char in text)


class _FrontEnd:
    """What both front ends share: the callbacks, the stdout/stderr output,
    stdin lines, the signals that quit, and the guarded loop."""

    def __init__(self, title: str, on_submit: Callable[[str], None],
                 on_quit: Callable[[], None], *, reads_stdin: bool) -> None:
        self.title = title
        self._on_submit = on_submit
        self._on_quit = on_quit
        self._status = ""
        self._input_enabled = True
        self.stopped = False
        self._reads_stdin = reads_stdin
        self._pending = bytearray()   # stdin bytes of a line not yet ended
        self._stdin_reader: StdinReader | None = None   # see _stdin()
        self._selector: selectors.BaseSelector | None = None
        self._colours: dict[str, int] = {}          # name -> its order of first appearance
        self._reported: set[tuple[str, str]] = set()  # (callback, exception type) seen already
        self._wakeup_receive: socket.socket | None = None
        self._wakeup_send: socket.socket | None = None
        self._previous_handlers: dict[int, object] = {}
        self._quit_signalled = False   # Ctrl-C or SIGTERM came: see _on_signal
        self._turn_failed = False      # a callback of the current turn raised: see _take_turn
        self._previous_wakeup = -1
        self._hidden = HiddenRun()                  # the run of hidden lines shown last, if any
        self._hidden_printed: int | None = None     # the newest number of it printed on stdout
        self._hidden_printed_at = 0.0

    def show_line(self, sender: str, text: str) -> None:
        """Add one line to the transcript."""
        self._end_hidden_run()
        write_line(f"{self._name_for_stdout(sender)}: {text}")

    def show_text(self, line: str, sender: str) -> None:
        """Add one preformatted transcript line (Lab 2's "#12 alice: hi"),
        with ``sender``'s name in its colour, printed to stdout exactly as given."""
        self._end_hidden_run()
        write_line(line)

    def show_hidden(self, seq: int, sender: str) -> None:
        """Room message ``seq``, from someone ignored. Hidden messages in a row
        (nothing else shown between them) are one line that grows: "~#12-#19 (8
        hidden messages from people you ignore)". stdout, which cannot change a
        line, gets a run's first line at once, then its whole line again when
        the run ends (anything else is shown) and, while it grows, at most
        every HIDDEN_RUN_PRINT_SECONDS: the last such line is the window's."""
        self.colour_index(sender)   # a name takes its colour even hidden: the order is everyone's
        if not self._hidden.continues(seq):
            self._end_hidden_run()
        self._hidden.add(seq)
        if self._hidden_printed is None:
            self._print_hidden_run(time.monotonic())

    def show_note(self, text: str) -> None:
        """Report an event that is not a chat line ("alice left")."""
        self._end_hidden_run()
        write_line(text, "stderr")

    def show_wire(self, line: str) -> None:
        """One wire line (common/wire.py), on stdout."""
        self._end_hidden_run()
        show_wire_on_stdout(line)

    def set_status(self, text: str) -> None:
        """Replace the status (the window's status line; a note in the terminal)."""
        if text != self._status:
            self._status = text
            write_line(f"[{text}]", "stderr")

    def set_members(self, names: list[str]) -> None:
        """Show who is in the room, in this order (Lab 2): a list beside the
        window's transcript. The terminal shows nothing, because a list redrawn
        there would scroll the transcript away; its user types /who instead."""
        # Nothing to do here: ChatWindow overrides this, TerminalChat keeps it.

    def session_over(self, text: str) -> None:
        """The peer is gone or refused us: show why, in one line. The window stays
        open until the user closes it; the terminal, having nobody to wait for, ends."""
        self.show_note(text)

    def stop(self) -> None:
        """End run() once the current event is handled."""
        self.stopped = True

    def set_input_enabled(self, enabled: bool) -> None:
        """Take lines from the user, or leave them waiting (before a login, say).
        Quitting works either way."""
        self._input_enabled = enabled
        if self._selector is not None:
            self._watch_stdin()

    def colour_index(self, sender: str) -> int:
        """The index, in SENDER_COLOURS, of ``sender``'s colour: names take the
        colours in the order they first appear."""
        return self._colours.setdefault(sender, len(self._colours)) % len(SENDER_COLOURS)

    def _submit(self, text: str) -> bool:
        """Hand one line to the role; False if it was refused (and not sent)."""
        if text.strip() == QUIT_COMMAND:
            self._quit()
        elif text.strip():
            try:
                self._on_submit(text)
            except ProtocolError as error:   # too long, a control character...
                self.show_note(f"not sent: {error}")
                return False
        return True

    def _quit(self) -> None:
        if not self.stopped:
            try:
                self._on_quit()
            finally:   # the role's goodbye failed (its error is reported): the program still ends
                self.stop()

    def _name_for_stdout(self, sender: str) -> str:
        return sender

    def _print_hidden_run(self, now: float) -> None:
        write_line(self._hidden.line())
        self._hidden_printed, self._hidden_printed_at = self._hidden.last, now

    def _print_hidden_run_if_due(self, now: float) -> None:
        """A run that grew since stdout last had its line: print it, if that was
        HIDDEN_RUN_PRINT_SECONDS ago (the loop asks after every turn)."""
        if (self._hidden_printed not in (None, self._hidden.last)
                and now - self._hidden_printed_at >= HIDDEN_RUN_PRINT_SECONDS):
            self._print_hidden_run(now)

    def _end_hidden_run(self) -> None:
        """Something else is shown: the run of hidden lines, if any, is over."""
        if self._hidden_printed not in (None, self._hidden.last):
            self._print_hidden_run(time.monotonic())
        self._hidden.end()
        self._hidden_printed = None

    # --- The loop's plumbing, the same for both front ends -----------------------------

    def _start(self, selector: selectors.BaseSelector) -> None:
        """Before the loop: watch stdin (if we read it), and turn Ctrl-C and
        SIGTERM into a quit."""
        self._selector = selector
        self._watch_stdin()
        # A signal handler runs between any two steps of whatever the loop was
        # doing, maybe half-way through sending a record: quitting right there
        # could close a socket under a handler's feet. So the signal only puts
        # a byte into a socketpair that the selector watches, and the loop
        # quits on its own time, as if the user had typed /quit. (A window polls
        # the same selector, so the same byte reaches it.)
        self._wakeup_receive, self._wakeup_send = socket.socketpair()
        for sock in (self._wakeup_receive, self._wakeup_send):
            sock.setblocking(False)
        selector.register(self._wakeup_receive, selectors.EVENT_READ, self._on_wakeup)
        if threading.current_thread() is threading.main_thread():   # only it may set handlers
            for signal_number in QUIT_SIGNALS:
                self._previous_handlers[signal_number] = signal.signal(signal_number, self._on_signal)
            # Python itself writes the signal's number to this socket the moment
            # the signal arrives, before any handler of ours runs. On Windows that
            # is the only way to wake a select() that waits: Ctrl-C does not
            # interrupt it there, so a handler would run only once the next
            # packet came.
            self._previous_wakeup = signal.set_wakeup_fd(self._wakeup_send.fileno(),
                                                         warn_on_full_buffer=False)

    def _finish(self) -> None:
        """After the loop: put the signals and the selector back as they were."""
        if self._previous_handlers:
            signal.set_wakeup_fd(self._previous_wakeup)
        for signal_number, handler in self._previous_handlers.items():
            signal.signal(signal_number, handler)
        self._previous_handlers.clear()
        wire.flush()
        self._end_hidden_run()   # stdout gets the last run's whole line
        self._selector.unregister(self._wakeup_receive)
        self._wakeup_receive.close()
        self._wakeup_send.close()
        self.set_input_enabled(False)   # leave the selector without our stdin in it
        if self._stdin_reader is not None:
            self._stdin_reader.close()

    def _on_signal(self, _signal_number: int, _frame: object) -> None:
        # The signal's number is in the wake-up socket already (set_wakeup_fd),
        # and the loop quits when it reads it. Having a handler at all is what
        # keeps Ctrl-C from raising KeyboardInterrupt. The flag is for a loop
        # that never reads it: a handler that fails on every turn (a TODO's
        # NotImplementedError on a socket that stays readable) ends each turn
        # before the wake-up socket's turn comes. _guarded() quits then.
        self._quit_signalled = True

    def _on_wakeup(self, _mask: int) -> None:
        if set(self._wakeup_receive.recv(STDIN_READ_BYTES)) & set(QUIT_SIGNALS):
            self._quit()

    def _guarded(self, callback: Callable, *args: object) -> object:
        """Run one callback of the loop and return what it returns. An
        exception that escapes it is a bug in the role file: say so once, with
        its traceback, and carry on (returning None), so a bug costs one event,
        never the whole chat or a frozen window."""
        result = None
        try:
            result = callback(*args)
        except Exception as error:   # deliberately broad: this is the last boundary
            self._report(getattr(callback, "__qualname__", repr(callback)), error)
            self._turn_failed = True
        if self._quit_signalled and not self.stopped:   # between two steps of the loop: a safe place to quit
            self._quit_signalled = False
            self._guarded(self._quit)
        wire.flush()   # wire lines still waiting for a step that did not come (common/wire.py)
        self._print_hidden_run_if_due(time.monotonic())
        return result

    def _take_turn(self, turn: Callable[[float | None], None], timeout: float | None) -> None:
        """One turn of the loop, guarded; after a turn that raised, a pause
        (FAILED_TURN_PAUSE_SECONDS), so that a failing handler cannot spin."""
        self._turn_failed = False
        self._guarded(turn, timeout)
        if self._turn_failed and not self.stopped:
            time.sleep(FAILED_TURN_PAUSE_SECONDS)   # a signal still quits: _on_signal runs during it

    def _tick_if_due(self, tick: Callable[[], None] | None, next_tick: float, tick_interval_ms: int) -> float:
        """Run ``tick`` if its time ``next_tick`` has come; return when the next one is due."""
        if tick is None or self.stopped or time.monotonic() < next_tick:
            return next_tick
        self._guarded(tick)
        return time.monotonic() + tick_interval_ms / 1000

    def _report(self, where: str, error: BaseException) -> None:
        if (where, type(error).__name__) in self._reported:
            return   # once is enough: a socket that stays readable would repeat it forever
        self._reported.add((where, type(error).__name__))
        write_line(f"internal error in {where} (reported once; the program carries on):\n"
                   + "".join(traceback.format_exception(type(error), error, error.__traceback__)),
                   "stderr", end="")

    # --- stdin: the terminal's keyboard, or a script typing into a window ---------------

    def _stdin(self) -> StdinReader:
        """The reader of stdin, started on first use: at the loop's start, or
        by a password read from a pipe (TerminalChat.ask_password)."""
        if self._stdin_reader is None:
            self._stdin_reader = StdinReader()
        return self._stdin_reader

    def _watch_stdin(self) -> None:
        # While input is off, the reader's socket is simply not watched: its
        # lines (and its end) wait in the socket, and none is lost. The reader
        # thread meanwhile blocks once that socket's buffer is full, so a long
        # wait costs no memory. Ctrl-C still works.
        if not self._reads_stdin:
            return
        chunks = self._stdin().chunks
        watched = chunks in self._selector.get_map()
        if self._input_enabled and not watched and not self.stopped:
            self._selector.register(chunks, selectors.EVENT_READ, self._on_stdin)
        elif watched and not self._input_enabled:
            self._selector.unregister(chunks)

    def _on_stdin(self, _mask: int) -> None:
        try:
            data = self._stdin().chunks.recv(STDIN_READ_BYTES)   # b"": the reader saw the end of stdin
        except BlockingIOError:   # woken for nothing: nothing is lost by waiting for the next chunk
            return
        before_ctrl_x, ctrl_x, _after = data.partition(CTRL_X)
        self._pending += before_ctrl_x
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        if not data or ctrl_x:   # the end of stdin, or Ctrl-X: send the last piece first
            lines.append(bytes(self._pending))
        for line in lines:
            if self.stopped:
                return
            self._submit(line.decode("utf-8", errors="replace").rstrip("\r"))
        if not data or ctrl_x:
            self._quit()


class StdinReader:
    """Read stdin in a thread of its own, and hand what it reads to the loop
    through a socketpair that the selector can watch.

    Why not watch stdin itself? Windows' select() takes sockets only (a pipe
    or the console raises WinError 10038), and even on Linux and macOS epoll
    and kqueue refuse a regular file or /dev/null. A blocking read in a thread
    works on anything: a terminal, a pipe, a file, /dev/null, a closed
    descriptor (read as an empty stdin). net.BackgroundWork hands results to
    the loop the same way.

    The thread sends every chunk, in order, into ``chunks``' other end, and at
    the end of stdin closes it: ``chunks.recv()`` then returns b"", as a socket
    does when its peer closes. So the loop reads stdin exactly as it reads a
    TCP connection. The thread is a daemon: blocked in a read of the keyboard,
    it never keeps the program alive once the loop is over.
    """

    def __init__(self) -> None:
        self.chunks, self._writer = socket.socketpair()
        self.chunks.setblocking(False)
        threading.Thread(target=self._read, args=(_raw_stdin(),), name="stdin", daemon=True).start()

    def _read(self, stdin: io.RawIOBase | None) -> None:
        try:
            while stdin is not None:
                try:
                    data = stdin.read(STDIN_READ_BYTES)
                except (OSError, ValueError):   # a descriptor that is closed, or a terminal gone
                    data = b""
                if not data:   # the end of stdin (None: a non-blocking stdin, which no role sets up)
                    break
                self._writer.sendall(data)   # blocks while the loop leaves input off: no line lost
        except OSError:
            return   # the loop is over and closed its end: nobody is left to read stdin for
        finally:
            self._writer.close()   # the end of stdin, as the loop will read it: b""

    def read_line(self, check_interval_seconds: float) -> str | None:
        """Wait for one whole line and return it without its line end; None at
        the end of stdin, or on a Ctrl-X. Takes exactly that line off the
        socket: whatever follows stays there for the loop. Ctrl-C and SIGTERM
        (as KeyboardInterrupt) are let in every ``check_interval_seconds``."""
        line = bytearray()
        self.chunks.settimeout(check_interval_seconds)   # a blocking wait Windows would not interrupt
        try:
            while True:
                try:
                    # MSG_PEEK looks without taking: only the line itself is then taken.
                    peeked = self.chunks.recv(STDIN_READ_BYTES, socket.MSG_PEEK)
                except TimeoutError:
                    continue   # back in Python for a moment: a signal's handler may run
                end = peeked.find(b"\n")
                line += self.chunks.recv(len(peeked) if end < 0 else end + 1)
                if not peeked or CTRL_X in line:
                    return None
                if end >= 0:
                    return line.decode("utf-8", errors="replace").rstrip("\r\n")
        finally:
            self.chunks.setblocking(False)

    def close(self) -> None:
        """Stop handing stdin to anyone: the thread ends at its next chunk."""
        self.chunks.close()


class _PasswordDialog(simpledialog.Dialog if tk is not None else object):
    """A dialog that asks for a password and hides it as typed (``answer``:
    None if cancelled). Ctrl-X in it quits, as in the window, and cuts nothing."""

    def __init__(self, parent: tk.Tk, title: str, prompt: str,
                 on_quit_key: Callable[[tk.Event], str]) -> None:
        self._prompt, self._on_quit_key = prompt, on_quit_key
        self.answer: str | None = None
        super().__init__(parent, title)   # returns once the dialog is closed

    def body(self, master: tk.Frame) -> tk.Entry:
        tk.Label(master, text=self._prompt, justify="left").pack(padx=5, anchor="w")
        self._entry = tk.Entry(master, show="*")
        self._entry.pack(padx=5, fill="x")
        for widget in (self._entry, self):
            widget.bind("<Control-x>", self._on_quit_key)
            widget.bind("<Control-X>", self._on_quit_key)
        self.bind("<KP_Enter>", self.ok)   # as Return does
        return self._entry   # it has the focus

    def apply(self) -> None:
        self.answer = self._entry.get()

    def destroy(self) -> None:
        # The entry's master's master is this dialog: dropping the entry leaves no
        # reference cycle, which a collector on another thread would free (see ChatWindow.__init__).
        self._entry = None
        super().destroy()


def _is_a_terminal(stream: io.IOBase | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except ValueError:   # the stream was closed
        return False


def _raw_stdin() -> io.RawIOBase | None:
    """stdin without Python's buffer, or None if there is no stdin at all.
    Raw, so that nothing is read ahead and kept where the loop cannot see it;
    on a Windows console it is the console's own reader, which hands us UTF-8."""
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    return getattr(stdin, "raw", None)


class TerminalChat(_FrontEnd):
    """Headless mode for SSH and CI: stdin lines in, transcript lines out.

    Each line of stdin is one message. A line "/quit", a Ctrl-X (byte 0x18,
    then Enter: the terminal hands us whole lines), the end of stdin, Ctrl-C
    or SIGTERM quits. stdin may be a terminal, a pipe, a file or /dev/null,
    on any system: a thread reads it (StdinReader).
    set_members() shows nothing here: /who lists the room on demand.
    """

    def __init__(self, title: str, on_submit: Callable[[str], None],
                 on_quit: Callable[[], None]) -> None:
        super().__init__(title, on_submit, on_quit, reads_stdin=True)
        self._colour = _is_a_terminal(sys.stdout)
        if wire.tap is not None:   # --wire: its lines now come through us, and end a run of hidden lines
            wire.turn_on(self.show_wire)

    def ask_password(self, prompt: str) -> str | None:
        """Ask on the terminal without echoing; None if the user gives up
        (Ctrl-D, Ctrl-C or SIGTERM). If stdin is no terminal (a pipe, a file),
        the password is its first line, and the lines after it are the chat."""
        # While we wait for the password, SIGTERM interrupts as Ctrl-C does:
        # there is no session yet to say goodbye to. (Ctrl-C's handler is set
        # too: a program started where SIGINT is ignored, by a script's `&`
        # say, inherits that, and Python then leaves Ctrl-C ignored.)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {number: signal.signal(number, signal.default_int_handler) for number in QUIT_SIGNALS}
        try:
            if not _is_a_terminal(sys.stdin):
                # getpass would read the line through Python's buffer of stdin,
                # which takes the lines after it too, out of our reader's sight.
                write_line(f"{prompt}: ", "stderr", end="")
                return self._stdin().read_line(PROMPT_SIGNAL_CHECK_MS / 1000)
            with warnings.catch_warnings():   # no terminal to hide the answer on: getpass warns of it
                warnings.simplefilter("ignore", getpass.GetPassWarning)
                return getpass.getpass(f"{prompt}: ")
        except (EOFError, KeyboardInterrupt):
            write_line("", "stderr")   # end the prompt's line: the role says why it stops
            return None
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def session_over(self, text: str) -> None:
        super().session_over(text)
        self.stop()

    def run(self, selector: selectors.BaseSelector, turn: Callable[[float | None], None],
            tick: Callable[[], None] | None = None, tick_interval_ms: int = 1000) -> None:
        """Call ``turn(timeout)`` until stop(), each time blocking until the next
        tick is due (or for good, without ``tick``); call ``tick()`` every
        ``tick_interval_ms`` (Lab 2: heartbeats and repairs) if given."""
        self._start(selector)
        try:
            next_tick = time.monotonic() + tick_interval_ms / 1000
            while not self.stopped:
                timeout = None if tick is None else max(0.0, next_tick - time.monotonic())
                self._take_turn(turn, timeout)
                next_tick = self._tick_if_due(tick, next_tick, tick_interval_ms)
        finally:
            self._finish()

    def _name_for_stdout(self, sender: str) -> str:
        if not self._colour:  # a pipe or a file gets the bare name
            return sender
        colour = TERMINAL_COLOURS[self.colour_index(sender) % len(TERMINAL_COLOURS)]
        return f"\x1b[1;{colour}m{sender}\x1b[0m"


class ChatWindow(_FrontEnd):
    """A tkinter window: scrolling transcript, entry box, status line, and in
    Lab 2 a member list at the right.

    Enter (or the keypad's Enter) sends the line, and several lines pasted at
    once are sent one a line; Ctrl-X, closing the window, Cmd-Q (macOS), Ctrl-C
    or SIGTERM quits, and closes the password dialog if it is up. F2 (F6 on
    macOS), or the "Show the wire" box beside the status line, shows or hides
    the wire view (common/wire.py) in the transcript.

    The transcript keeps its newest ``window_lines`` lines. Lines shown
    during a turn wait in ``_unshown`` and go into the widget together once
    the turn is over (``_draw_unshown``): Tk redraws a text widget after each
    change, and one change per turn costs the same for one line or a hundred.
    Raises tkinter.TclError if no window can be opened.
    """

    def __init__(self, title: str, on_submit: Callable[[str], None],
                 on_quit: Callable[[], None], *, poll_interval_ms: int,
                 window_lines: int = DEFAULT_WINDOW_LINES) -> None:
        super().__init__(title, on_submit, on_quit,
                         reads_stdin=os.environ.get(WINDOW_STDIN_VARIABLE) == "1")
        self._poll_interval_ms = poll_interval_ms
        self._window_lines = window_lines
        # Each line not yet drawn, as the widget's insert() takes it: text, tags, text, tags...
        # Beyond window_lines the oldest would be trimmed at once: they are never drawn.
        self._unshown: deque[list] = deque(maxlen=window_lines)
        self._replaces_last_line = False   # the first unshown line takes the last drawn one's place
        self._draw_due = False             # a draw is scheduled for when Tk is idle
        _sharp_on_high_dpi_screens()
        self._root = tk.Tk()
        self._root.title(title)
        self._root.geometry(os.environ.get(GEOMETRY_VARIABLE) or DEFAULT_GEOMETRY)
        # An exception in a Tk callback (a key press) is reported as the loop's are. Through
        # a weak reference: the window and its root then make no reference cycle, so the
        # root goes when the role drops the window, on its own thread. Left to the garbage
        # collector, it might go on another thread, where its tkinter objects cannot call
        # Tcl and freeing its Tcl interpreter aborts the process. (So: no closure that
        # refers to itself, no tkinter Variable, nothing of the window's in a cycle.)
        report = weakref.WeakMethod(self._report)
        self._root.report_callback_exception = (
            lambda _type, error, _traceback: report()("a window callback", error))
        self._transcript = scrolledtext.ScrolledText(self._root, wrap="word", state="disabled",
                                                     font=("TkDefaultFont", 11))
        self._transcript.tag_configure("note", foreground="grey40",
                                       font=("TkDefaultFont", 10, "italic"))
        self._transcript.tag_configure("hidden", foreground="grey55",
                                       font=("TkDefaultFont", 11, "italic"))
        self._transcript.tag_configure("wire", foreground="grey40", font=("Courier", 9))
        for index, colour in enumerate(SENDER_COLOURS):
            self._transcript.tag_configure(f"sender{index}", foreground=colour,
                                           font=("TkDefaultFont", 11, "bold"))
        # A line that wraps continues indented, so text that wraps can never pass
        # for a line of its own ("#99 server: ...") on someone else's screen.
        self._transcript.tag_configure("line", lmargin2=WRAP_INDENT_PIXELS)
        self._members: tk.Listbox | None = None   # see set_members()
        self._members_unshown: list[str] | None = None   # the member list to draw, if it changed
        self._quit_while_asking: Callable[[], None] | None = None   # see ask_password()
        self._entry = tk.Entry(self._root, font=("TkDefaultFont", 11))
        bottom = tk.Frame(self._root)
        self._status_line = tk.Label(bottom, anchor="w", relief="sunken", padx=4)
        # --wire (add_front_end_options) turned the view on before the window existed.
        self._root.setvar(WIRE_SHOWN_VARIABLE, wire.tap is not None)
        self._wire_key, wire_key_name = wire_toggle_key()
        self._wire_toggle = tk.Checkbutton(bottom, text=f"Show the wire ({wire_key_name})", takefocus=0,
                                           variable=WIRE_SHOWN_VARIABLE, command=self._on_wire_toggled)
        self._wire_toggle.pack(side="right")
        self._status_line.pack(side="left", fill="x", expand=True)
        bottom.pack(side="bottom", fill="x")
        if self._wire_is_shown():
            wire.turn_on(self.show_wire)
        self._entry.pack(side="bottom", fill="x", padx=4, pady=4)
        self._transcript.pack(side="top", fill="both", expand=True, padx=4, pady=(4, 0))
        self._entry.bind("<Return>", self._on_return)
        self._entry.bind("<KP_Enter>", self._on_return)   # the keypad's Enter sends too
        self._entry.bind("<<Paste>>", self._on_paste)
        # Bound on the toplevel, so the keys work whichever widget has the focus;
        # and on the entry box too, where "break" stops the event there. On
        # Windows and Linux, Tk makes Ctrl-X a Cut, which the entry box's own
        # class binding would do first: the text typed would leave the box for
        # the clipboard on the way out.
        for widget in (self._entry, self._root):
            widget.bind("<Control-x>", self._on_quit_key)
            widget.bind("<Control-X>", self._on_quit_key)
        self._root.bind(self._wire_key, self._on_wire_key)
        self._root.protocol("WM_DELETE_WINDOW", self._quit)   # the window's close button
        if PLATFORM == "darwin":
            # Cmd-Q, and Quit in the application menu, call this Tk procedure if it
            # exists; without it, Tk would end the program at once, with no goodbye.
            self._root.createcommand("::tk::mac::Quit", self._quit)
            self._root.bind("<Command-q>", self._on_quit_key)
        self._entry.focus_set()

    def show_line(self, sender: str, text: str) -> None:
        super().show_line(sender, text)
        self._append((f"{sender}", self._sender_tag(sender)), (f": {text}\n", ()))

    def show_text(self, line: str, sender: str) -> None:
        super().show_text(line, sender)
        tag = self._sender_tag(sender)   # even for a hidden line: the colour order stays the same
        # The name is the first whole word equal to it, after "#12 " if the line
        # starts with a number (a name may be all digits too).
        start = line.find(" ") + 1 if line.startswith(("#", "~#")) else 0
        name = re.compile(rf"(?<!\w){re.escape(sender)}(?!\w)").search(line, start)
        if line.startswith("~") or name is None:   # a hidden message from someone ignored
            self._append((f"{line}\n", "hidden"))
        else:
            self._append((line[:name.start()], ()), (sender, tag), (f"{line[name.end():]}\n", ()))

    def show_hidden(self, seq: int, sender: str) -> None:
        grows = self._hidden.continues(seq)
        super().show_hidden(seq, sender)
        self._append((f"{self._hidden.line()}\n", "hidden"), replacing=grows)

    def show_note(self, text: str) -> None:
        super().show_note(text)
        self._append((f"{text}\n", "note"))

    def show_wire(self, line: str) -> None:
        """One wire line: on stdout, and in the transcript in small grey type."""
        super().show_wire(line)
        self._append((f"{line}\n", "wire"))

    def set_status(self, text: str) -> None:
        super().set_status(text)
        self._status_line.configure(text=displayable(text))

    def set_members(self, names: list[str]) -> None:
        if self._members is None:   # made on first use, so Lab 1's windows stay as they were
            self._members = tk.Listbox(self._root, width=MEMBER_LIST_WIDTH_CHARS, takefocus=0,
                                       activestyle="none", font=("TkDefaultFont", 11, "bold"))
            # pack hands out space in packing order, and the transcript (packed
            # already) spans the whole width: to stand beside it, go before it.
            self._members.pack(side="right", fill="y", padx=(0, 4), pady=(4, 0),
                               before=self._transcript)
        for name in names:
            self.colour_index(name)   # in the order given, as on every other screen
        self._members_unshown = list(names)   # drawn with the lines: a join wave redraws it once a turn
        self._draw_soon()

    def session_over(self, text: str) -> None:
        super().session_over(text)
        self._status_line.configure(text=displayable(f"disconnected: {text}"))
        if self._members is not None:   # nobody is in a room we are no longer part of
            self.set_members([])
        self.set_input_enabled(False)

    def set_input_enabled(self, enabled: bool) -> None:
        super().set_input_enabled(enabled)
        self._entry.configure(state="normal" if enabled else "disabled")

    def ask_password(self, prompt: str) -> str | None:
        """Ask in a dialog that hides what is typed; None if cancelled, or if
        the user quits meanwhile (Ctrl-X, the close button, Ctrl-C or SIGTERM):
        there is nobody to say goodbye to yet, so nothing is sent."""
        interrupted = False
        watcher = ""

        def give_up() -> None:   # close the dialog: it then answers None
            nonlocal interrupted
            interrupted = True
            for child in self._root.winfo_children():
                if isinstance(child, tk.Toplevel):
                    child.destroy()

        def on_signal(_signal_number: int, _frame: object) -> None:
            nonlocal interrupted
            interrupted = True

        def watch() -> None:
            # The dialog waits inside Tk's C code, where no Python signal
            # handler can run: a timer runs a little Python now and then.
            nonlocal watcher
            if interrupted:
                give_up()
            else:
                watcher = self._root.after(PROMPT_SIGNAL_CHECK_MS, watch)

        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {number: signal.signal(number, on_signal) for number in QUIT_SIGNALS}
        self._quit_while_asking = give_up   # see _quit()
        watch()
        try:
            answer = _PasswordDialog(self._root, f"{self.title}: password", prompt, self._on_quit_key).answer
        finally:
            self._quit_while_asking = None
            self._root.after_cancel(watcher)
            watch = None   # it refers to itself: a cycle, which would keep the window for a collector
            for number, handler in previous.items():
                signal.signal(number, handler)
        return None if interrupted else answer

    def run(self, selector: selectors.BaseSelector, turn: Callable[[float | None], None],
            tick: Callable[[], None] | None = None, tick_interval_ms: int = 1000) -> None:
        """Show the window and run the loop until stop(): ``turn(timeout)`` waits
        for the sockets at most POLL_INTERVAL_MS, then Tk handles what came in
        meanwhile (keys, clicks, redraws); ``tick()`` every ``tick_interval_ms``
        if given. Call it after registering a socket: on Windows, select() with
        nothing to watch raises an error."""
        self._start(selector)
        try:
            next_tick = time.monotonic() + tick_interval_ms / 1000
            while not self.stopped:
                # The sockets are served the moment they are ready, as in the terminal;
                # the window's own events wait for them at most POLL_INTERVAL_MS, too
                # short for a person to notice. (A window that waited in Tk's mainloop
                # and polled the sockets from a Tk timer made every packet wait for it.)
                timeout = self._poll_interval_ms / 1000
                if tick is not None:
                    timeout = max(0.0, min(timeout, next_tick - time.monotonic()))
                self._draw_due = True   # drawn right after the turn: no idle callback needed for it
                self._take_turn(turn, timeout)
                self._guarded(self._draw_unshown)   # what the turn showed, in one insert
                next_tick = self._tick_if_due(tick, next_tick, tick_interval_ms)
                if not self.stopped:
                    self._guarded(self._root.update)   # keys, clicks, redraws: Tk's events, all of them
        finally:
            self._finish()
            if self._wire_is_shown():   # the window goes: its wire view goes with it
                wire.turn_off()
            self._root.destroy()

    def _quit(self) -> None:
        if self._quit_while_asking is not None:   # the password dialog is up: close it
            self._quit_while_asking()
        else:
            super()._quit()

    def _on_quit_key(self, _event: tk.Event) -> str:
        self._quit()
        return "break"   # no other binding of the key runs: no Cut of the entry's text

    def _wire_is_shown(self) -> bool:
        return self._root.getboolean(self._root.getvar(WIRE_SHOWN_VARIABLE))

    def _on_wire_key(self, _event: tk.Event) -> str:
        self._root.setvar(WIRE_SHOWN_VARIABLE, not self._wire_is_shown())
        self._on_wire_toggled()
        return "break"

    def _on_wire_toggled(self) -> None:
        if self._wire_is_shown():
            wire.turn_on(self.show_wire)
            self.show_note("showing the wire: each record and datagram as it crosses it "
                           f"({wire_toggle_key()[1]} hides it)")
        else:
            wire.turn_off()

    def _on_return(self, _event: tk.Event) -> None:
        if not self._input_enabled:   # a disabled Entry still delivers its key bindings
            return
        text = self._entry.get()
        if not text.strip():
            self.show_note("nothing sent: the line is empty")
        elif self._submit(text):
            self._entry.delete(0, "end")
        else:   # refused: keep it, selected, so the user can fix it or type over it
            self._entry.selection_range(0, "end")
            self._entry.icursor("end")

    def _on_paste(self, _event: tk.Event) -> str | None:
        """Several lines pasted: each is a message, in order and each checked,
        as each line is in the terminal. The last piece, if no line end
        follows it, stays in the entry box to be finished."""
        try:
            pasted = self._root.clipboard_get()
        except tk.TclError:   # an empty clipboard, or no text on it
            return None
        *lines, last = re.split(r"\r\n|\r|\n", pasted)
        if not lines:
            return None   # one line: the entry box's own paste
        if self._input_enabled:
            if self._entry.selection_present():   # a paste replaces the selection
                self._entry.delete("sel.first", "sel.last")
            cursor = self._entry.index("insert")
            typed = self._entry.get()
            lines[0] = typed[:cursor] + lines[0]
            self._entry.delete(0, "end")
            for line in lines:
                if self.stopped:   # a "/quit" among them
                    break
                self._submit(line)   # a refused line says why, and the next goes on, as in the terminal
            else:
                self._entry.insert(0, last + typed[cursor:])
                self._entry.icursor(len(last))
        return "break"   # not the entry's own paste, which would put the line ends in the box

    def _sender_tag(self, sender: str) -> str:
        return f"sender{self.colour_index(sender)}"

    def _append(self, *pieces: tuple[str, str | tuple], replacing: bool = False) -> None:
        """Add one line (its pieces: text and tags) to those the next draw puts
        in the transcript; ``replacing``: in place of the line shown last (a run
        of hidden lines that grew)."""
        line = []
        for text, tag in pieces:
            line += [displayable(text), ((tag,) if isinstance(tag, str) else tuple(tag)) + ("line",)]
        if replacing and self._unshown:
            self._unshown[-1] = line
            return
        if not self._unshown:
            self._replaces_last_line = replacing
        self._unshown.append(line)
        self._draw_soon()

    def _draw_soon(self) -> None:
        # The loop draws after every turn; what is shown outside a turn (a key, a
        # dialog) is drawn once Tk is idle.
        if not self._draw_due:
            self._draw_due = True
            self._root.after_idle(self._draw_unshown)

    def _draw_unshown(self) -> None:
        """Put the lines not yet drawn into the transcript in one insert, then
        trim its oldest lines beyond window_lines; redraw the member list if it changed."""
        self._draw_due = False
        if self._members_unshown is not None:
            names, self._members_unshown = self._members_unshown, None
            self._members.delete(0, "end")
            self._members.insert("end", *map(displayable, names))
            for index, name in enumerate(names):
                self._members.itemconfigure(index, foreground=SENDER_COLOURS[self.colour_index(name)])
        if not self._unshown:
            return
        pieces = [piece for line in self._unshown for piece in line]
        replaces_last_line, self._replaces_last_line = self._replaces_last_line, False
        self._unshown.clear()
        transcript = self._transcript
        transcript.configure(state="normal")   # read-only, except for us
        try:
            if replaces_last_line:   # "end-1c" is the start of the empty line after our last one
                transcript.delete("end-1c -1 line", "end-1c")
            transcript.insert("end", *pieces)
            excess = int(transcript.index("end-1c").split(".")[0]) - 1 - self._window_lines
            if excess > 0:
                transcript.delete("1.0", f"{excess + 1}.0")
        finally:
            transcript.configure(state="disabled")
        transcript.see("end")
