"""Shared pytest setup: the grading marker and the kit's import path."""
import sys
from pathlib import Path

# The tests run from a clone without installing anything extra: make the kit's
# packages (common, lab1_tcp, lab2_udp) importable from the repository root.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.platforms", "tests.wire_story", "tests.grading"]
