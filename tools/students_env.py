"""The students' copy of the server's .env: every line but the server's private key.

    python -m tools.students_env                       # reads .env, writes students.env
    python -m tools.students_env --host 192.168.1.20 --broadcast 192.168.1.255 --out class.env

Clients need CHAT_PSK (it admits the class) and SERVER_PUBLIC_KEY (it lets
every client check that it talks to your server); never SERVER_PRIVATE_KEY,
which lets its holder pose as the server. --host and --broadcast set
SERVER_HOST and BROADCAST_ADDR for a class on a LAN (docs/instructor.md). The
copy is written only if it does not exist yet, and it is checked: a client
can load it, and the private key is nowhere in it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from common.config import ConfigError, load_settings

PRIVATE = "SERVER_PRIVATE_KEY"


def students_copy(text: str, host: str | None = None, broadcast: str | None = None) -> str:
    """The server's .env without its private key; SERVER_HOST and BROADCAST_ADDR
    replaced (or added) when given."""
    wanted = {name: value for name, value in (("SERVER_HOST", host), ("BROADCAST_ADDR", broadcast)) if value}
    lines = []
    for line in text.splitlines():
        match = re.match(r"\s*(?:export\s+)?([A-Z0-9_]+)\s*=", line)
        name = match.group(1) if match else None
        if name == PRIVATE:
            continue
        if name in wanted:
            line = f"{name}={wanted.pop(name)}"
        lines.append(line)
    lines += [f"{name}={value}" for name, value in wanted.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.students_env", description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, default=Path(".env"), help="the server's .env (default: .env)")
    parser.add_argument("--out", type=Path, default=Path("students.env"),
                        help="the copy to write (default: students.env); never replaced")
    parser.add_argument("--host", help="SERVER_HOST in the copy: the server's LAN address")
    parser.add_argument("--broadcast", help="BROADCAST_ADDR in the copy: the subnet's broadcast address")
    args = parser.parse_args(argv)
    try:
        text = args.env.read_text(encoding="utf-8")
    except OSError as error:
        print(f"students_env: cannot read {args.env}: {error.strerror or error} (start a server once to make it)",
              file=sys.stderr)
        return 1
    copy = students_copy(text, args.host, args.broadcast)
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"students_env: {args.out} exists already: not replaced", file=sys.stderr)
        return 1
    with open(fd, "w", encoding="utf-8") as out:
        out.write(copy)
    try:
        load_settings(str(args.out), create=False)   # as a client loads it
    except ConfigError as error:
        print(f"students_env: the copy does not load: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: hand it to the students as their .env ({PRIVATE} left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
