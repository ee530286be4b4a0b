"""The two front ends of every role: a tkinter window and a headless terminal.

Both have one interface, so a role file never asks which one it has::

    ui = open_front_end(title, on_submit, on_quit, headless=..., poll_interval_ms=...)
    ui.show_line(sender, text)   # one transcript line; each sender has its own colour
    ui.show_text(line, sender)   # a line formatted already ("#12 alice: hi"), in sender's colour
    ui.show_note(text)           # something happened: "alice left"
    ui.set_status(text)          # connected to whom, encrypted or not
    ui.set_members(names)        # who is in the room: a list beside the transcript (Lab 2)
    ui.ask_password(prompt)      # a Tk dialog, or getpass in a terminal
    ui.set_input_enabled(flag)   # take lines from the user now, or not yet
    ui.session_over(text)        # the peer is gone: show why, and let the user leave
    ui.run(selector, tick=..., tick_interval_ms=..., after_events=...)   # until stop() or quit
    ui.stop()

``on_submit(text)`` runs when the user enters a line; ``on_quit()`` when the
user leaves (Ctrl-X, closing the window, a line "/quit", or the end of
stdin); the loop ends right after it.

Both write the transcript to stdout, one flushed line per message, and notes
and status to stderr. In the terminal that is the whole interface; the window
shows the same lines too, so a script (or the grader) can follow a GUI session.

The loop: the selector's keys carry their handler as ``data`` (see net.py).
The terminal blocks in ``select()`` with stdin registered next to the sockets.
A window cannot block: Tk must keep drawing and reading the keyboard, so a Tk
timer polls the selector with a zero timeout every POLL_INTERVAL_MS.
"""
from __future__ import annotations

import getpass
import os
import selectors
import sys
import time
import zlib
from collections.abc import Callable

try:
    import tkinter as tk
    from tkinter import scrolledtext, simpledialog
except ImportError:  # Python without Tk (python3-tk not installed): terminal only
    tk = None

QUIT_COMMAND = "/quit"
CTRL_X = b"\x18"
STDIN_READ_BYTES = 4096
# Readable on white and told apart easily; a name gets the same colour in every
# window because the choice hashes the name (crc32 does not change between runs,
# unlike Python's hash()).
SENDER_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#e377c2", "#8c564b", "#17becf")
TERMINAL_COLOURS = ("34", "31", "32", "35", "95", "33", "36")  # ANSI codes, in the same order
MEMBER_LIST_WIDTH_CHARS = 12


def sender_colour_index(sender: str) -> int:
    """The index, in SENDER_COLOURS, of ``sender``'s colour."""
    return zlib.crc32(sender.encode("utf-8")) % len(SENDER_COLOURS)


def open_front_end(title: str, on_submit: Callable[[str], None], on_quit: Callable[[], None],
                   *, headless: bool, poll_interval_ms: int) -> ChatWindow | TerminalChat:
    """Return a ChatWindow, or a TerminalChat if ``headless`` is asked for or no
    window can be opened (no display, no Tk); that choice is noted on stderr."""
    reason = None
    if not headless:
        if tk is None:
            reason = "tkinter is not installed"
        elif sys.platform.startswith("linux") and not (
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            reason = "no display (DISPLAY is not set)"
        else:
            try:
                return ChatWindow(title, on_submit, on_quit, poll_interval_ms=poll_interval_ms)
            except tk.TclError as error:
                reason = f"no window could be opened ({error})"
    if reason:
        print(f"{reason}: running in headless terminal mode", file=sys.stderr, flush=True)
    return TerminalChat(title, on_submit, on_quit)


class _FrontEnd:
    """What both front ends share: the callbacks and the stdout/stderr output."""

    def __init__(self, title: str, on_submit: Callable[[str], None],
                 on_quit: Callable[[], None]) -> None:
        self.title = title
        self._on_submit = on_submit
        self._on_quit = on_quit
        self._status = ""
        self._input_enabled = True
        self.stopped = False

    def show_line(self, sender: str, text: str) -> None:
        """Add one line to the transcript."""
        # One print per line and an explicit flush: a pipe would otherwise hold
        # the line in a buffer, and whoever reads our stdout would wait for it.
        print(f"{self._name_for_stdout(sender)}: {text}", flush=True)

    def show_text(self, line: str, sender: str) -> None:
        """Add one preformatted transcript line (Lab 2's "#12 alice: hi"),
        shown in ``sender``'s colour and printed to stdout exactly as given."""
        print(line, flush=True)

    def show_note(self, text: str) -> None:
        """Report an event that is not a chat line ("alice left")."""
        print(text, file=sys.stderr, flush=True)

    def set_status(self, text: str) -> None:
        """Replace the status (the window's status line; a note in the terminal)."""
        if text != self._status:
            self._status = text
            print(f"[{text}]", file=sys.stderr, flush=True)

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

    def _submit(self, text: str) -> None:
        if text.strip() == QUIT_COMMAND:
            self._quit()
        elif text.strip():
            self._on_submit(text)

    def _quit(self) -> None:
        if not self.stopped:
            self._on_quit()
            self.stop()

    def _name_for_stdout(self, sender: str) -> str:
        return sender

    @staticmethod
    def _handle_ready(selector: selectors.BaseSelector, timeout: float | None,
                      stopped: Callable[[], bool], after_events: Callable[[], None] | None) -> None:
        ready = selector.select(timeout)
        for key, mask in ready:
            key.data(mask)
            if stopped():  # a quit closes sockets that may still be in this batch
                return
        # Lab 2's server packs what this round logged into as few datagrams as
        # fit: under load one round handles many clients, so one datagram
        # (one seal, one signature) carries many events.
        if ready and after_events is not None:
            after_events()


class TerminalChat(_FrontEnd):
    """Headless mode for SSH and CI: stdin lines in, transcript lines out.

    Each line of stdin is one message. A line "/quit", a Ctrl-X (byte 0x18,
    then Enter: the terminal hands us whole lines) or the end of stdin quits.
    Needs a POSIX system: Windows can select() on sockets only, not on stdin.
    set_members() shows nothing here: /who lists the room on demand.
    """

    def __init__(self, title: str, on_submit: Callable[[str], None],
                 on_quit: Callable[[], None]) -> None:
        super().__init__(title, on_submit, on_quit)
        self._pending = bytearray()   # stdin bytes of a line not yet ended
        self._colour = sys.stdout.isatty()
        self._selector: selectors.BaseSelector | None = None

    def ask_password(self, prompt: str) -> str | None:
        """Ask on the terminal without echoing; None if the user gives up (Ctrl-D)."""
        try:
            return getpass.getpass(f"{prompt}: ")
        except EOFError:
            return None

    def session_over(self, text: str) -> None:
        super().session_over(text)
        self.stop()

    def run(self, selector: selectors.BaseSelector, tick: Callable[[], None] | None = None,
            tick_interval_ms: int = 1000, after_events: Callable[[], None] | None = None) -> None:
        """Handle socket events and stdin until stop(); call ``tick()`` every
        ``tick_interval_ms`` (Lab 2: heartbeats and repairs) if given, and
        ``after_events()`` after each round of events."""
        self._selector = selector
        self._watch_stdin()
        next_tick = time.monotonic() + tick_interval_ms / 1000
        while not self.stopped:
            timeout = None if tick is None else max(0.0, next_tick - time.monotonic())
            self._handle_ready(selector, timeout, lambda: self.stopped, after_events)
            if tick is not None and not self.stopped and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + tick_interval_ms / 1000
        self.set_input_enabled(False)   # leave the selector without our stdin in it

    def set_input_enabled(self, enabled: bool) -> None:
        super().set_input_enabled(enabled)
        if self._selector is not None:
            self._watch_stdin()

    def _watch_stdin(self) -> None:
        # While input is off, stdin is simply not watched: its lines (and its
        # end) wait in the pipe, and none is lost. Ctrl-C still works.
        stdin_fd = sys.stdin.fileno()
        watched = stdin_fd in self._selector.get_map()
        if self._input_enabled and not watched:
            try:
                self._selector.register(stdin_fd, selectors.EVENT_READ, self._on_stdin)
            except PermissionError:
                # epoll refuses to watch a regular file or /dev/null: they never
                # block, so there is nothing to wait for. Read them now, to the end.
                while not self.stopped:
                    self._on_stdin(selectors.EVENT_READ)
        elif watched and not self._input_enabled:
            self._selector.unregister(stdin_fd)

    def _on_stdin(self, _mask: int) -> None:
        # os.read, not sys.stdin.readline(): readline would block until a whole
        # line arrived, and Python's own buffer could hide lines from select().
        data = os.read(sys.stdin.fileno(), STDIN_READ_BYTES)
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

    def _name_for_stdout(self, sender: str) -> str:
        if not self._colour:  # a pipe or a file gets the bare name
            return sender
        return f"\x1b[1;{TERMINAL_COLOURS[sender_colour_index(sender)]}m{sender}\x1b[0m"


class ChatWindow(_FrontEnd):
    """A tkinter window: scrolling transcript, entry box, status line, and in
    Lab 2 a member list at the right.

    Enter sends the line; Ctrl-X or closing the window quits.
    Raises tkinter.TclError if no window can be opened.
    """

    def __init__(self, title: str, on_submit: Callable[[str], None],
                 on_quit: Callable[[], None], *, poll_interval_ms: int) -> None:
        super().__init__(title, on_submit, on_quit)
        self._poll_interval_ms = poll_interval_ms
        self._root = tk.Tk()
        self._root.title(title)
        self._root.geometry("560x400")
        self._transcript = scrolledtext.ScrolledText(self._root, wrap="word", state="disabled",
                                                     font=("TkDefaultFont", 11))
        self._transcript.tag_configure("note", foreground="grey40",
                                       font=("TkDefaultFont", 10, "italic"))
        for index, colour in enumerate(SENDER_COLOURS):
            self._transcript.tag_configure(f"sender{index}", foreground=colour,
                                           font=("TkDefaultFont", 11, "bold"))
        self._members: tk.Listbox | None = None   # see set_members()
        self._entry = tk.Entry(self._root, font=("TkDefaultFont", 11))
        self._status_line = tk.Label(self._root, anchor="w", relief="sunken", padx=4)
        self._status_line.pack(side="bottom", fill="x")
        self._entry.pack(side="bottom", fill="x", padx=4, pady=4)
        self._transcript.pack(side="top", fill="both", expand=True, padx=4, pady=(4, 0))
        self._entry.bind("<Return>", self._on_return)
        # Bound on the toplevel, so the keys work whichever widget has the focus.
        self._root.bind("<Control-x>", lambda _event: self._quit())
        self._root.bind("<Control-X>", lambda _event: self._quit())
        self._root.protocol("WM_DELETE_WINDOW", self._quit)
        self._entry.focus_set()

    def show_line(self, sender: str, text: str) -> None:
        super().show_line(sender, text)
        self._append((f"{sender}: ", f"sender{sender_colour_index(sender)}"), (f"{text}\n", ()))

    def show_text(self, line: str, sender: str) -> None:
        super().show_text(line, sender)
        self._append((f"{line}\n", f"sender{sender_colour_index(sender)}"))

    def show_note(self, text: str) -> None:
        super().show_note(text)
        self._append((f"{text}\n", "note"))

    def set_status(self, text: str) -> None:
        super().set_status(text)
        self._status_line.configure(text=text)

    def set_members(self, names: list[str]) -> None:
        if self._members is None:   # made on first use, so Lab 1's windows stay as they were
            self._members = tk.Listbox(self._root, width=MEMBER_LIST_WIDTH_CHARS, takefocus=0,
                                       activestyle="none", font=("TkDefaultFont", 11, "bold"))
            # pack hands out space in packing order, and the transcript (packed
            # already) spans the whole width: to stand beside it, go before it.
            self._members.pack(side="right", fill="y", padx=(0, 4), pady=(4, 0),
                               before=self._transcript)
        self._members.delete(0, "end")
        for name in names:
            self._members.insert("end", name)
            self._members.itemconfigure("end", foreground=SENDER_COLOURS[sender_colour_index(name)])

    def session_over(self, text: str) -> None:
        super().session_over(text)
        self._status_line.configure(text=f"disconnected: {text}")
        self.set_input_enabled(False)

    def set_input_enabled(self, enabled: bool) -> None:
        super().set_input_enabled(enabled)
        self._entry.configure(state="normal" if enabled else "disabled")

    def ask_password(self, prompt: str) -> str | None:
        """Ask in a dialog that hides what is typed; None if cancelled."""
        return simpledialog.askstring(self.title, prompt, show="*", parent=self._root)

    def run(self, selector: selectors.BaseSelector, tick: Callable[[], None] | None = None,
            tick_interval_ms: int = 1000, after_events: Callable[[], None] | None = None) -> None:
        """Show the window and handle socket events until stop(); call ``tick()``
        every ``tick_interval_ms`` if given, and ``after_events()`` after each
        round of events. Call it after registering a socket:
        on Windows, select() with nothing to watch raises an error."""
        def poll_network() -> None:
            # timeout=0: never wait here. Waiting inside a Tk callback would
            # freeze the window, which can only redraw between callbacks.
            self._handle_ready(selector, 0, lambda: self.stopped, after_events)
            if not self.stopped:
                self._root.after(self._poll_interval_ms, poll_network)

        def tick_again() -> None:
            tick()
            if not self.stopped:
                self._root.after(tick_interval_ms, tick_again)

        poll_network()
        if tick is not None:
            self._root.after(tick_interval_ms, tick_again)
        if not self.stopped:
            self._root.mainloop()
        self._root.destroy()

    def stop(self) -> None:
        super().stop()
        self._root.quit()   # ends mainloop() once the current callback returns

    def _on_return(self, _event: tk.Event) -> None:
        if not self._input_enabled:   # a disabled Entry still delivers its key bindings
            return
        text = self._entry.get()
        self._entry.delete(0, "end")
        self._submit(text)

    def _append(self, *pieces: tuple[str, str | tuple]) -> None:
        self._transcript.configure(state="normal")   # read-only, except for us
        for text, tag in pieces:
            self._transcript.insert("end", text, tag)
        self._transcript.configure(state="disabled")
        self._transcript.see("end")
