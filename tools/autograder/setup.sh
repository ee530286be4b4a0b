#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image:
# everything the tests need, installed the way .ci/run does it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Xvfb and xdotool for the window tests; Tk for the windows themselves; ImageMagick
# for a picture of the screen when a window test fails.
apt-get install -y -qq python3 python3-venv python3-tk xvfb xdotool imagemagick
# A virtual environment: an image whose system Python refuses pip (PEP 668,
# "externally-managed-environment") takes it all the same. run_autograder uses it.
python3 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --quiet -r /autograder/source/requirements.txt
