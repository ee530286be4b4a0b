# Two commands on a fresh clone: `make demo` and `make test`.
# Both create the virtual environment .venv by themselves the first time.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench screenshots autograder interop starter clean

demo: $(STAMP)
	$(PY) -m lab2_udp.demo

# The tests run in parallel, four at a time (pytest-xdist; most of them wait on processes
# and sockets rather than compute), handed out in the order tests/conftest.py gives.
# TEST_ARGS= runs them one after another.
TEST_ARGS ?= -n 4 --dist load
test: $(STAMP)
	$(PY) -m pytest $(TEST_ARGS)

# Style and likely bugs (ruff, a dev-only tool; its settings are in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Several minutes: every bench, then docs/performance.md and its plot.
# `$(PY) bench/report.py --quick` prints a smaller report in under a minute.
bench: $(STAMP) $(VENV)/.bench-installed
	$(PY) bench/report.py

$(VENV)/.bench-installed: pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

# docs/lab1.png, docs/lab2.png and docs/wire.png, taken on a private Xvfb screen (needs xvfb and imagemagick).
screenshots: $(STAMP)
	$(PY) -m tools.screenshots

# Gradescope's autograder.zip: the kit, its tests, setup.sh and run_autograder.
autograder: $(STAMP)
	$(PY) -m tools.autograder.build autograder.zip

# The students' starter code: the kit with each solution region replaced by a TODO
# (docs/instructor.md, "Starter code for students"). STARTER_DIR=folder writes it elsewhere.
STARTER_DIR ?= starter
starter: $(STAMP)
	$(PY) -m tools.starter $(STARTER_DIR) --replace

# Cross-testing: every student's server with the kit's client and every student's client with
# the kit's server (docs/instructor.md). INTEROP_ARGS="--cross" also pairs the students.
interop: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make interop SUBMISSIONS=folder [INTEROP_ARGS=--cross]"; exit 2; }
	$(PY) -m tools.interop $(SUBMISSIONS) $(INTEROP_ARGS)

# Reinstall only when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis autograder.zip starter
