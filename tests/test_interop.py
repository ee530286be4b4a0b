"""Cross-testing (tools/interop.py): a class's servers and clients, each
graded against the kit's other role and, with --cross, against each other's.

Two students: one hands in the kit's own Lab 2 client and server, the other a
client with a bug from tests/mutants.py. One test (``-k``) keeps it fast.
"""
from __future__ import annotations

import json
import sys

import pytest

from tests.mutants import MUTANTS, mutate
from tests.procs import ROOT, run_nested

[DM_AS_ROOM_MESSAGE] = [mutant for mutant in MUTANTS if mutant.name == "lab2 client sends a DM as a room message"]
TEST_NAME = DM_AS_ROOM_MESSAGE.caught_by.split("::")[1]


def hand_in(folder, role_file: str, source: str) -> None:
    folder.joinpath(role_file).parent.mkdir(parents=True, exist_ok=True)
    folder.joinpath(role_file).write_text(source, encoding="utf-8")


@pytest.mark.network
@pytest.mark.points(2)
@pytest.mark.deadline(300)
def test_interop_matrix_gives_a_good_pair_full_points_and_names_the_test_a_broken_client_fails(tmp_path):
    submissions = tmp_path / "submissions"
    # "ada" submitted a whole clone, in a folder of its own: the files are found at any depth.
    for role_file in ("lab2_udp/server.py", "lab2_udp/client.py"):
        hand_in(submissions / "ada" / "chat-lab", role_file, (ROOT / role_file).read_text(encoding="utf-8"))
    client = DM_AS_ROOM_MESSAGE.role_file.read_text(encoding="utf-8")
    hand_in(submissions / "bob", "lab2_udp/client.py", mutate(DM_AS_ROOM_MESSAGE, client))
    (submissions / "carol").mkdir()      # nothing handed in: no row, no column

    completed = run_nested(
        [sys.executable, "-m", "tools.interop", str(submissions), "--cross", "-k", TEST_NAME, "--jobs", "3",
         "--json", str(tmp_path / "interop.json")],
        timeout=280, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()

    header = next(line for line in lines if line.startswith("server \\ client"))
    assert header.split()[3:] == ["reference", "ada", "bob"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1:][:3]}
    points = {"reference": rows["reference"], "ada": rows["ada"]}
    assert points["reference"][0] == "."                     # the kit against itself is not run
    full = points["reference"][1]
    earned, possible = full.split("/")
    assert float(earned) == float(possible) > 0, completed.stdout
    assert points["ada"][:2] == [full, full], completed.stdout            # with the kit's client, and her own
    assert points["reference"][2].startswith("0/") and points["ada"][2].startswith("0/"), completed.stdout
    assert rows.get("bob") == [".", ".", "."], completed.stdout          # bob handed in no server
    assert "carol" not in completed.stdout

    not_passed = lines[lines.index("not passed:") + 1:]
    assert len(not_passed) == 2, completed.stdout
    for line in not_passed:
        assert line.startswith("lab2_udp: server ") and f" x client bob: {TEST_NAME} failed: " in line

    report = json.loads((tmp_path / "interop.json").read_text(encoding="utf-8"))
    assert {(pairing["server"], pairing["client"]) for pairing in report} == {
        ("ada", "reference"), ("reference", "ada"), ("reference", "bob"), ("ada", "ada"), ("ada", "bob")}
