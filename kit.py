"""The README's two commands on every platform: set up .venv, then run the demo or the tests.

    python3 kit.py demo     (Windows: py kit.py demo)      what `make demo` runs
    python3 kit.py test     (Windows: py kit.py test)      what `make test` runs
    python3 kit.py setup    only the set-up

Any further arguments go to the demo (`--interactive`, `--loss 0.3`) or to pytest
(`-k lab1 -x`). Standard library only, so it runs before anything is installed.

The set-up, each step only when needed:
- refuse a Python older than 3.10, in one line naming the fix; on macOS, whose
  /usr/bin/python3 is 3.9, first look on PATH for python3.14 .. python3.10 and re-run there;
- create .venv (its Python is .venv/bin/python, on Windows .venv\\Scripts\\python.exe);
- install the kit into it with its test tools, again only when pyproject.toml changed;
- write .env with fresh random keys if there is none (as a server's first run would);
- say in one line when tkinter is missing, since the windows need it.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys

MINIMUM_PYTHON = (3, 10)
NEWER_PYTHONS = ["python3.%d" % minor for minor in range(14, MINIMUM_PYTHON[1] - 1, -1)]
ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
STAMP = os.path.join(VENV, ".installed")          # the pyproject.toml that was installed, as a hash
ENV_FILE = os.path.join(ROOT, ".env")
# The tests run four at a time (pytest-xdist): most wait on processes and sockets, not the CPU.
# Each worker is handed one test at a time, the next when it is free (--maxschedchunk 1), in the
# order tests/conftest.py gives: the longest first. A later "-n 0" runs them one after another.
COMMANDS = {"demo": ["-m", "lab2_udp.demo"],
            "test": ["-m", "pytest", "-n", "4", "--dist", "load", "--maxschedchunk", "1"], "setup": None}
USAGE = "usage: python3 kit.py demo|test|setup [arguments for the demo or pytest]   (Windows: py kit.py ...)"
REEXEC_VARIABLE = "CHAT_KIT_REEXEC"   # set on a re-run under a newer Python, so it happens once

PYTHON_FIX = {
    "win32": "install Python 3.10 or newer from python.org, then run: py kit.py ...",
    "darwin": "install Python 3.10 or newer from python.org (or brew install python@3.12), "
              "then run: python3.12 kit.py ...",
}
TKINTER_FIX = {
    "win32": "run the python.org installer again and tick 'tcl/tk and IDLE'",
    "darwin": "use the python.org installer, or with Homebrew's Python: brew install python-tk@%d.%d"
              % sys.version_info[:2],
}
TKINTER_FIX_ELSEWHERE = "apt-get install python3-tk (Debian, Ubuntu), dnf install python3-tkinter (Fedora)"


def venv_python():
    """The virtual environment's interpreter: Windows keeps it in Scripts, with .exe."""
    if os.name == "nt":
        return os.path.join(VENV, "Scripts", "python.exe")
    return os.path.join(VENV, "bin", "python")


def _newer_python_on_path():
    """A python3.x of at least MINIMUM_PYTHON on PATH, newest first, or None."""
    for name in NEWER_PYTHONS:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_python():
    """Go on under Python 3.10+: re-run under a newer one on PATH, or stop with the fix."""
    if sys.version_info[:2] >= MINIMUM_PYTHON:
        return
    newer = None if os.environ.get(REEXEC_VARIABLE) else _newer_python_on_path()
    if newer:
        print("kit.py: Python %d.%d is too old, running under %s" % (sys.version_info[:2] + (newer,)), flush=True)
        os.environ[REEXEC_VARIABLE] = "1"
        sys.exit(subprocess.call([newer, os.path.abspath(__file__)] + sys.argv[1:]))
    fix = PYTHON_FIX.get(sys.platform, "install python3.10 or newer (apt-get install python3.12, say), "
                                       "then run: python3.12 kit.py ...")
    sys.exit("kit.py: the kit needs Python %d.%d or newer, this is %d.%d: %s"
             % (MINIMUM_PYTHON + sys.version_info[:2] + (fix,)))


def tkinter_missing_line():
    """One line naming the fix when this Python has no tkinter, else None."""
    try:
        import tkinter  # noqa: F401  (only whether it imports)
    except ImportError:
        fix = TKINTER_FIX.get(sys.platform, TKINTER_FIX_ELSEWHERE)
        return "kit.py: tkinter is missing, so the roles and the demo can only run in the terminal: " + fix
    return None


def _pyproject_hash():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as pyproject:
        return hashlib.sha256(pyproject.read()).hexdigest()


def _run(command):
    """Run a set-up step; stop with its exit status if it fails."""
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:
        sys.exit("kit.py: this step failed (exit status %d): %s" % (code, " ".join(command)))


def _venv_version():
    """The (major, minor) of the Python that made .venv, from its pyvenv.cfg; None if unknown."""
    try:
        with open(os.path.join(VENV, "pyvenv.cfg"), encoding="utf-8") as config:
            text = config.read()
    except OSError:
        return None
    found = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", text, re.MULTILINE)
    return (int(found.group(1)), int(found.group(2))) if found else None


def setup():
    """Create .venv and install the kit into it (again only when pyproject.toml changed);
    write .env with fresh keys if there is none."""
    python = venv_python()
    made_by = _venv_version()
    if made_by is not None and made_by < MINIMUM_PYTHON:
        # A .venv left by an older Python (macOS's 3.9, say) cannot hold the kit.
        print("kit.py: .venv was made by Python %d.%d; making it again" % made_by, flush=True)
        shutil.rmtree(VENV)
    if not os.path.exists(python):
        print("kit.py: creating .venv with Python %d.%d" % sys.version_info[:2], flush=True)
        if os.path.exists(STAMP):   # a .venv without its Python: what it had installed is gone too
            os.remove(STAMP)
        _run([sys.executable, "-m", "venv", VENV])
    wanted = _pyproject_hash()
    installed = ""
    if os.path.exists(STAMP):
        with open(STAMP, encoding="ascii") as stamp:
            installed = stamp.read().strip()
    if installed != wanted:
        print("kit.py: installing the kit and its test tools into .venv (once)", flush=True)
        _run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        # --prefer-binary: where the newest cryptography has no wheel (32-bit Windows, Intel
        # Macs), take the newest one that has, rather than build it from source with Rust.
        _run([python, "-m", "pip", "install", "--quiet", "--prefer-binary", "--editable", ".[test]"])
        with open(STAMP, "w", encoding="ascii") as stamp:
            stamp.write(wanted + "\n")
    if not os.path.exists(ENV_FILE):
        # The keys a server writes on its first run; a client on another machine
        # replaces this file with a copy of its server's .env.
        _run([python, "-c", "from common.config import create_env_file; create_env_file('.env')"])
        print("kit.py: wrote .env with fresh random keys (to join another machine's server, "
              "copy its .env here instead)", flush=True)
    missing = tkinter_missing_line()
    if missing:
        print(missing, flush=True)
    return python


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        sys.exit(USAGE)
    require_python()
    python = setup()
    command, extra = COMMANDS[argv[0]], argv[1:]
    if command is None:
        return 0
    os.chdir(ROOT)
    if os.name != "nt":
        # POSIX: become the program, so Ctrl-C and exit statuses reach it unchanged.
        os.execv(python, [python] + command + extra)
    # Windows has no real exec: wait for the child. Ctrl-C reaches both (one console),
    # and the child decides how to end, so kit.py only waits on.
    process = subprocess.Popen([python] + command + extra)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
