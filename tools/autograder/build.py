"""Build autograder.zip for Gradescope: ``make autograder``.

The zip holds the kit as git tracks it (the tests included, screenshots
left out), Gradescope's two scripts from this folder, and requirements.txt
with what grading needs: the kit's dependencies and test dependencies, read
from the installed package so it stays in step with pyproject.toml, without
the bench's plotting and the linter.

With --lab N (``make autograder LAB=1``) the zip grades that lab only, for
an assignment of one lab: it holds graded_lab, the lab's number, which
run_autograder reads, leaving out any other lab's files a student submits
(a whole repository, say). Without it, every lab submitted is graded.

    python -m tools.autograder.build [OUTPUT] [--lab N]     # default: autograder.zip
"""
from __future__ import annotations

import argparse
import zipfile
from importlib import metadata
from pathlib import Path

from tools.starter import LAB_FOLDERS, LEFT_OUT_NAMES, tracked_files
from tools.starter import LEFT_OUT_SUFFIXES as NOT_KIT_SUFFIXES

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRIPTS = ("setup.sh", "run_autograder")
GRADED_LAB_FILE = "graded_lab"     # /autograder/source/graded_lab, which run_autograder reads
LABS = tuple(LAB_FOLDERS)   # the kit's labs, as make starter LAB=N knows them
LEFT_OUT_SUFFIXES = (".png",)


def kit_files() -> list[str]:
    """The files git tracks, as they are in the working tree now. In a copy that
    is no git checkout (a starter just made, before its `git init`), every file
    but what the starter leaves out of a kit too (caches, databases, the .venv),
    and the settings files, which hold keys."""
    tracked = tracked_files(ROOT)
    if tracked is None:
        tracked = [path.relative_to(ROOT) for path in sorted(ROOT.rglob("*"))
                   if not any(part in LEFT_OUT_NAMES or part.endswith((*NOT_KIT_SUFFIXES, ".env"))
                              for part in path.relative_to(ROOT).parts)]
    names = [path.as_posix() for path in tracked]
    return [name for name in names if not name.endswith(LEFT_OUT_SUFFIXES) and (ROOT / name).is_file()]


# Dev-only tools among the test extras: grading never runs them.
NOT_FOR_GRADING = ("ruff",)


def requirements() -> str:
    """What grading needs, one a line: the kit's dependencies and its test
    dependencies (not the bench's plotting, nor the linter)."""
    lines = []
    for requirement in metadata.requires("chat-lab-kit") or []:
        spec, _, marker = (part.strip() for part in requirement.partition(";"))
        extra = marker.replace('"', "'").partition("extra == ")[2].strip("'")
        name = spec.split("<")[0].split(">")[0].split("=")[0].split("[")[0].strip()
        if (not marker or extra == "test") and name not in NOT_FOR_GRADING:
            lines.append(spec)
    return "\n".join(lines) + "\n"


def build(output: Path, lab: int | None = None) -> Path:
    """Write the zip to ``output``; ``lab`` (1 or 2): it grades that lab only."""
    if lab is not None and lab not in LABS:
        raise ValueError(f"no Lab {lab}: the kit has Labs {LABS}")
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in kit_files():
            archive.write(ROOT / name, name)
        archive.writestr("requirements.txt", requirements())
        for script in SCRIPTS:
            info = zipfile.ZipInfo(script)
            info.external_attr = 0o100755 << 16    # executable: Gradescope runs them as they are
            archive.writestr(info, (HERE / script).read_bytes())
        if lab is not None:
            archive.writestr(GRADED_LAB_FILE, f"{lab}\n")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.autograder.build", description="Build autograder.zip.")
    parser.add_argument("output", nargs="?", type=Path, default=Path("autograder.zip"))
    parser.add_argument("--lab", type=int, choices=LABS,
                        help="grade this lab only (one Gradescope assignment per lab); default: every lab submitted")
    args = parser.parse_args(argv)
    print(build(args.output, args.lab))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
