"""Starter code for students: the kit with the heart of each lab cut out.

    make starter                         # writes starter/
    make starter STARTER_DIR=/tmp/lab    # or anywhere else
    make starter LAB=2                   # Lab 2's regions cut, Lab 1 solved
    python -m tools.starter OUTDIR [--replace] [--lab N]

The solution marks what students write themselves (docs/instructor.md,
"Starter code for students", shows an example). In a .py file a region is a
block of whole statements between the comment lines BEGIN and END below, both
at the block's indentation; the PROMPT line (or lines) right after BEGIN says
what to write. In the starter the region becomes, at the same indentation, a
TODO comment with the prompt and ``raise NotImplementedError("...")`` with
the prompt's first clause (up to its first '; ', ': ', '. ' or ' ('). In a .md file, the lines from MARKDOWN_BEGIN to
MARKDOWN_END go: notes for the instructor only; so do a Makefile's lines
between BEGIN and END.

A marker that opens no region or closes none, a region without a prompt, a
region inside another, markers at different depths, code shallower than its
markers, or a starter file that does not compile stops the tool with the file
and line, before anything is written; no marker text survives into the
starter. The starter is the kit as git tracks it, as it is on disk now (or,
outside a git checkout, every file), without what is not the kit's to give
(.git, .venv, caches, .env with the server's private key, databases,
autograder.zip, the starter folder), without tests/test_starter.py, which
checks this tool against the solution, and without what quotes the solution
(LEFT_OUT_PATHS: the mutants, the benchmarks built on Lab 2's client). Its
handouts' tasks and rubrics are written from its own manifest.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]

# Spelled in two pieces so that this file, which the starter keeps (the layout
# test reads its markers), holds no marker text of its own.
SOLUTION = "SOL" "UTION"
BEGIN, END, PROMPT = f"# BEGIN {SOLUTION}", f"# END {SOLUTION}", "# PROMPT" ":"
MARKDOWN_BEGIN, MARKDOWN_END = f"<!-- BEGIN {SOLUTION} -->", f"<!-- END {SOLUTION} -->"
MARKER_TEXTS = (f"BEGIN {SOLUTION}", f"END {SOLUTION}", "PROMPT" ":")
TODO = "# TODO: "

# Never copied: version control, virtual environments, caches, build output,
# and local secrets and data (.env holds the server's private key).
LEFT_OUT_NAMES = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", "build",
                  "autograder.zip", ".env"}
LEFT_OUT_SUFFIXES = (".egg-info", ".db", ".db-wal", ".db-shm", ".pyc")
# The default output folder, the test that compares the starter with the solution, and what
# quotes the solution's lines: the mutants (each anchored on a line of a region) and the tests
# that use them, and the benchmarks whose simulated client mirrors Lab 2's (and the report and
# leaderboard built on it).
LEFT_OUT_PATHS = {"starter", "tests/test_starter.py", "tests/mutants.py", "tests/test_mutants.py",
                  "tests/test_interop.py", "bench/lab2_fanout.py", "bench/leaderboard.py", "bench/report.py"}
# Files whose lines between the .py markers (each alone on its line) are the instructor's only:
# the Makefile's targets for what the starter leaves out.
INSTRUCTOR_ONLY_BLOCKS = {"Makefile"}
LAB_FOLDERS = {1: "lab1_tcp", 2: "lab2_udp"}
# The grader's list of the suite's tests: a test it lists that a clone lacks counts as failed.
MANIFEST = "tests/expected_tests.json"


class MarkerError(ValueError):
    """A region's markers are wrong; the message starts with file:line."""


@dataclass(frozen=True)
class Region:
    """One marked region: line numbers count from 1 and include the markers."""
    begin: int
    end: int
    indent: str
    prompt: tuple[str, ...]
    code: tuple[str, ...]        # the solution's lines between the prompt and the end marker

    @property
    def short_prompt(self) -> str:
        """The prompt's first clause: the text of the NotImplementedError."""
        first = self.prompt[0]
        cut = min((first.find(mark) for mark in ("; ", ": ", ". ", " (") if mark in first), default=len(first))
        return first[:cut].rstrip(";:., ") or first   # a line that goes on below may end in a comma


def is_marker_line(line: str) -> bool:
    """True for the marker lines of a .py region: they do not count towards a role file's length."""
    return line.strip().startswith((BEGIN, END, PROMPT))


def _where(path: str, number: int) -> str:
    return f"{path}:{number}"


def find_regions(text: str, path: str = "<text>") -> list[Region]:
    """The regions of one .py file, in order; MarkerError for any marker out of place."""
    regions = []
    open_at: int | None = None
    indent = ""
    prompt: list[str] = []
    code: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        margin = line[:len(line) - len(line.lstrip())]
        if stripped == BEGIN:
            if open_at is not None:
                raise MarkerError(f"{_where(path, number)}: nested region: {BEGIN!r} inside the region "
                                  f"opened at line {open_at}; close that one first")
            open_at, indent, prompt, code = number, margin, [], []
        elif stripped == END:
            if open_at is None:
                raise MarkerError(f"{_where(path, number)}: unmatched {END!r}: no region is open")
            if margin != indent:
                raise MarkerError(f"{_where(path, number)}: inconsistent indentation: {END!r} at column "
                                  f"{len(margin)}, its {BEGIN!r} (line {open_at}) at column {len(indent)}")
            if not prompt:
                raise MarkerError(f"{_where(path, open_at)}: the region has no {PROMPT!r} line right after "
                                  f"{BEGIN!r}: say what the student writes")
            regions.append(Region(open_at, number, indent, tuple(prompt), tuple(code)))
            open_at = None
        elif stripped.startswith(PROMPT):
            if open_at is None or code:
                raise MarkerError(f"{_where(path, number)}: {PROMPT!r} belongs right after {BEGIN!r} "
                                  "(or another prompt line), inside a region")
            if margin != indent:
                raise MarkerError(f"{_where(path, number)}: inconsistent indentation: {PROMPT!r} at column "
                                  f"{len(margin)}, its {BEGIN!r} (line {open_at}) at column {len(indent)}")
            words = stripped.removeprefix(PROMPT).strip()
            if not words:
                raise MarkerError(f"{_where(path, number)}: an empty prompt: say what the student writes")
            prompt.append(words)
        elif open_at is not None:
            _check_no_markers(line, path, number)
            if stripped and not line.startswith(indent):
                raise MarkerError(f"{_where(path, number)}: inconsistent indentation: this line is shallower "
                                  f"than its region's markers (line {open_at}, column {len(indent)}); a region "
                                  "holds whole statements at one depth")
            code.append(line)
        else:
            _check_no_markers(line, path, number)
    if open_at is not None:
        raise MarkerError(f"{_where(path, open_at)}: unmatched {BEGIN!r}: the file ends before its {END!r}")
    return regions


def region_function(text: str, region: Region) -> str:
    """The function a region is in, with its class: ``ChatClient.connect``."""
    names: list[tuple[int, str]] = []   # (indentation, name) of each def or class still open
    for line in text.splitlines()[:region.begin - 1]:
        stripped = line.lstrip()
        depth = len(line) - len(stripped)
        if stripped.startswith(("def ", "class ")):
            names = [(indent, name) for indent, name in names if indent < depth]
            names.append((depth, stripped.split()[1].split("(")[0].rstrip(":")))
    return ".".join(name for indent, name in names if indent < len(region.indent))


def starter_python(text: str, path: str = "<text>", cut: Callable[[str, str], bool] | None = None) -> str:
    """The student's version of one .py file: each region replaced by its
    TODO and a NotImplementedError, at the region's indentation. With ``cut``,
    only the regions it accepts (by file and function) are; the others keep
    their code, without their markers."""
    regions = find_regions(text, path)
    if not regions:
        return text
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    position = 0
    raised_at: list[tuple[int, Region]] = []   # the starter's line of each region's raise
    for region in regions:
        out.extend(lines[position:region.begin - 1])
        if cut is not None and not cut(path, region_function(text, region)):
            out.extend(f"{line}\n" for line in region.code)   # the solution's code, as it is
            position = region.end
            continue
        out.append(f"{region.indent}{TODO}{region.prompt[0]}\n")
        out.extend(f"{region.indent}#{' ' * (len(TODO) - 1)}{more}\n" for more in region.prompt[1:])
        message = json.dumps(region.short_prompt, ensure_ascii=False)   # a valid Python literal too
        out.append(f"{region.indent}raise NotImplementedError({message})\n")
        raised_at.append((len(out), region))
        position = region.end
    out.extend(lines[position:])
    starter = "".join(out)
    try:
        compile(starter, path, "exec")
    except SyntaxError as error:
        # Blame the last region cut before the line that does not compile.
        blamed = [region for line, region in raised_at if line <= (error.lineno or 0)] or [regions[0]]
        raise MarkerError(f"{_where(path, blamed[-1].begin)}: the starter does not compile without this region "
                          f"({error.msg}): a region must hold whole statements, a whole body or block") from None
    return starter


def starter_markdown(text: str, path: str = "<text>",
                     markers: tuple[str, str] = (MARKDOWN_BEGIN, MARKDOWN_END)) -> str:
    """A .md file without its instructor-only parts (or a Makefile, with
    ``markers`` the .py ones: its instructor-only targets)."""
    begin, end = markers
    out: list[str] = []
    open_at: int | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == begin:
            if open_at is not None:
                raise MarkerError(f"{_where(path, number)}: nested region: {begin!r} inside the "
                                  f"region opened at line {open_at}")
            open_at = number
        elif stripped == end:
            if open_at is None:
                raise MarkerError(f"{_where(path, number)}: unmatched {end!r}: no region is open")
            open_at = None
        elif open_at is None:
            _check_no_markers(line, path, number)
            out.append(line)
    if open_at is not None:
        raise MarkerError(f"{_where(path, open_at)}: unmatched {begin!r}: the file ends before "
                          f"its {end!r}")
    return "".join(out)


def _check_no_markers(text: str, path: str, first_line: int = 1) -> None:
    """MarkerError for marker text outside a marker line: it would reach the starter."""
    for number, line in enumerate(text.splitlines(), start=first_line):
        if any(marker in line for marker in MARKER_TEXTS):
            raise MarkerError(f"{_where(path, number)}: marker text that is not a marker line: it would "
                              "reach the starter (a marker stands alone on its line, in a .py or .md file)")


def starter_manifest(text: str) -> str:
    """The grader's manifest without the tests of the files the starter leaves
    out, so that a student's make test does not count them as missing; in the
    manifest's own layout, one test a line."""
    manifest = json.loads(text)
    tests = {function: entry for function, entry in manifest["tests"].items()
             if function.partition("::")[0] not in LEFT_OUT_PATHS}
    lines = [f"  {json.dumps(function)}: {json.dumps(entry)}" for function, entry in tests.items()]
    return ('{\n "written by": ' + json.dumps(manifest["written by"]) + ',\n "tests": {\n'
            + ",\n".join(lines) + "\n }\n}\n")


def starter_text(text: str, path: str, cut: Callable[[str, str], bool] | None = None) -> str:
    """One file of the starter, by its kind."""
    if path == MANIFEST:
        return starter_manifest(text)
    if path.endswith(".py"):
        return starter_python(text, path, cut)
    if path.endswith(".md"):
        return starter_markdown(text, path)
    if Path(path).name in INSTRUCTOR_ONLY_BLOCKS:
        return starter_markdown(text, path, (BEGIN, END))
    _check_no_markers(text, path)
    return text


def lab_cut(lab: int | None) -> Callable[[str, str], bool] | None:
    """Which regions a starter for one lab cuts (None: every region).

    Lab 1's starter cuts both labs: a solved Lab 2 would answer Lab 1 (its
    client reads and dispatches as Lab 1's does, which is why that is a
    region of Lab 2 too). Lab 2's starter, handed out once Lab 1 is done,
    cuts Lab 2's regions only and gives Lab 1 solved."""
    if lab is None or lab == 1:
        return None
    folder = LAB_FOLDERS[lab]
    return lambda path, _function: path.startswith(folder + "/")


def tracked_files(root: Path) -> list[Path] | None:
    """The files git tracks in ``root``, or None if it is no git checkout of its own."""
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    except OSError:   # no git on this machine
        return None
    return [Path(name) for name in listed.stdout.decode("utf-8").split("\0") if name]


def kit_files(root: Path, out: Path) -> list[Path]:
    """The files the starter holds, relative to ``root``: in a git checkout
    the files git tracks, as they are on disk now (as make autograder takes
    them: a submissions/ folder or a note of your own stays out), else every
    file; never what LEFT_OUT_* names."""
    tracked = tracked_files(root)
    candidates = sorted(root.rglob("*")) if tracked is None else [root / name for name in tracked]
    files = []
    for path in candidates:
        relative = path.relative_to(root)
        if (not path.is_file() or path == out or out in path.parents
                or any(part in LEFT_OUT_NAMES or part.endswith(LEFT_OUT_SUFFIXES) for part in relative.parts)
                or {relative.as_posix(), *(parent.as_posix() for parent in relative.parents)} & LEFT_OUT_PATHS):
            continue
        files.append(relative)
    return files


def starter_files(out: Path, root: Path = ROOT, cut: Callable[[str, str], bool] | None = None
                  ) -> tuple[dict[Path, bytes | str], dict[str, int]]:
    """Every file of the starter, by its path relative to ``root``, and the
    number of regions cut from each file that had any (``cut``: only the
    regions it accepts, by file and function); MarkerError for the first
    file that is wrong."""
    files: dict[Path, bytes | str] = {}
    counts: dict[str, int] = {}
    for relative in kit_files(root, out):
        data = (root / relative).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:   # a picture: copied as it is
            files[relative] = data
            continue
        name = relative.as_posix()
        files[relative] = starter_text(text, name, cut)
        regions = find_regions(text, name) if name.endswith(".py") else []
        if cut is not None:
            regions = [region for region in regions if cut(name, region_function(text, region))]
        if regions:
            counts[name] = len(regions)
    solved = {f"lab{lab}" for lab, folder in LAB_FOLDERS.items() if not any(name.startswith(folder + "/")
                                                                         for name in counts)}
    _handouts_from_own_manifest(files, solved)
    return files, counts


def _handouts_from_own_manifest(files: dict[Path, bytes | str], solved: set[str]) -> None:
    """The handouts' parts written from the manifest (tests.grading), written
    anew from the starter's own manifest: it lists fewer tests than the kit's.
    A lab in ``solved`` has its regions written in this copy: its handout says so."""
    manifest = files.get(Path(MANIFEST))
    if not isinstance(manifest, str):
        return
    from tests.grading import HANDOUTS, handout_from_manifest   # the grader: only where the kit's tests are
    tests = json.loads(manifest)["tests"]
    for lab, handout in HANDOUTS.items():
        text = files.get(Path(handout))
        if isinstance(text, str):
            files[Path(handout)] = handout_from_manifest(text, tests, lab, lab in solved)


def write_starter(out: Path, root: Path = ROOT, cut: Callable[[str, str], bool] | None = None) -> dict[str, int]:
    """Write the starter into the empty or missing folder ``out``; return
    the number of regions cut from each file that had any. Nothing is written
    unless every file is right."""
    root, out = root.resolve(), out.resolve()
    files, counts = starter_files(out, root, cut)
    _write(files, out, root)
    return counts


def _write(files: dict[Path, bytes | str], out: Path, root: Path) -> None:
    for relative, content in files.items():
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        shutil.copymode(root / relative, target)   # run_autograder and .ci/run stay executable


def _check_room(out: Path, replace: bool) -> bool:
    """Whether ``out`` holds a previous starter to remove first. SystemExit
    for a folder that holds anything else, or anything at all without
    --replace: never the kit, a git clone, or a folder above the kit."""
    if not out.exists() or not any(out.iterdir()):
        return False
    if not replace:
        raise SystemExit(f"starter: {out} is not empty (--replace replaces a previous starter)")
    previous = (out / "lab1_tcp" / "server.py").is_file() and not (out / ".git").exists()
    if not previous or out == ROOT or out in ROOT.parents:
        raise SystemExit(f"starter: {out} does not look like a previous starter: not replaced")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.starter",
                                     description="Write the students' starter: the kit with every "
                                                 "solution region replaced by a TODO.")
    parser.add_argument("outdir", type=Path, help="the folder to write (missing or empty)")
    parser.add_argument("--replace", action="store_true", help="replace a starter written before")
    parser.add_argument("--lab", type=int, choices=sorted(LAB_FOLDERS),
                        help="the starter of one lab: 1 cuts both labs' regions (a solved Lab 2 would "
                             "answer Lab 1), 2 cuts Lab 2's and gives Lab 1 solved (default: both labs)")
    args = parser.parse_args(argv)
    out = args.outdir.resolve()
    remove_first = _check_room(out, args.replace)
    try:
        files, cut = starter_files(out, ROOT, lab_cut(args.lab))   # every marker is checked first
    except MarkerError as error:
        print(f"starter: {error}", file=sys.stderr)
        return 1
    if remove_first:
        shutil.rmtree(out)
    _write(files, out, ROOT)
    for name, count in cut.items():
        print(f"{name}: {count} region{'' if count == 1 else 's'} for the student")
    print(f"starter written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
