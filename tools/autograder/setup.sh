#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image:
# everything the tests need, installed the way .ci/run does it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Xvfb and xdotool for the window tests; Tk for the windows themselves; ImageMagick
# for a picture of the screen when a window test fails.
apt-get install -y -qq python3 python3-pip python3-tk xvfb xdotool imagemagick
python3 -m pip install --quiet -r /autograder/source/requirements.txt
