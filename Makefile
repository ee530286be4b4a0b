# Two commands on a fresh clone: `make demo` and `make test`.
# Both run kit.py, which creates the virtual environment .venv the first time, reinstalls
# the kit only when pyproject.toml changed, and then runs the demo or the tests; on Windows,
# without make, `py kit.py demo` and `py kit.py test` do the same. ARGS="-k lab1" passes
# arguments on (to pytest, or to the demo). kit.py looks for a Python 3.10+ itself.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup $(STAMP) lint screenshots autograder interop starter clean

demo:
	$(PYTHON) kit.py demo $(ARGS)

# kit.py runs the tests in parallel, four at a time (pytest-xdist; most of them wait on
# processes and sockets rather than compute), handed out in the order tests/conftest.py gives.
# ARGS="-n 0" runs them one after another.
test:
	$(PYTHON) kit.py test $(ARGS)

# Style and likely bugs (ruff, a dev-only tool; its settings are in pyproject.toml), and
# the CI workflows under .github/workflows (actionlint).
lint: $(STAMP) $(VENV)/.lint-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/actionlint

$(VENV)/.lint-installed: pyproject.toml
	$(PY) -m pip install --quiet --prefer-binary -e '.[test,lint]'
	touch $@

# BEGIN SOLUTION
# Several minutes: every bench, then docs/performance.md and its plot.
# `$(PY) bench/report.py --quick` prints a smaller report in under a minute.
# (The students' starter leaves this target out, with the benches it runs.)
.PHONY: bench
bench: $(STAMP) $(VENV)/.bench-installed
	$(PY) bench/report.py

$(VENV)/.bench-installed: pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@
# END SOLUTION

# docs/lab1.png, docs/lab2.png and docs/wire.png, taken on a private Xvfb screen (needs xvfb and imagemagick).
screenshots: $(STAMP)
	$(PY) -m tools.screenshots

# Gradescope's autograder.zip: the kit, its tests, setup.sh and run_autograder. One assignment
# per lab: LAB=1 (or 2) grades that lab only and ignores the other lab's files in a submission
# (a whole repository); without LAB it grades every lab submitted.
autograder: $(STAMP)
	$(PY) -m tools.autograder.build autograder.zip $(if $(LAB),--lab $(LAB))

# The students' starter code: the kit with each solution region replaced by a TODO
# (docs/instructor.md, "Starter code for students"). STARTER_DIR=folder writes it elsewhere;
# LAB=2 cuts only Lab 2's regions and gives Lab 1 solved (LAB=1, like the default, cuts both).
STARTER_DIR ?= starter
starter: $(STAMP)
	$(PY) -m tools.starter $(STARTER_DIR) --replace $(if $(LAB),--lab $(LAB))

# Cross-testing: every student's server with the kit's client and every student's client with
# the kit's server (docs/instructor.md). INTEROP_ARGS="--cross" also pairs the students.
interop: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make interop SUBMISSIONS=folder [INTEROP_ARGS=--cross]"; exit 2; }
	$(PY) -m tools.interop $(SUBMISSIONS) $(INTEROP_ARGS)

# .venv, the kit installed in it (again only when pyproject.toml changed), and .env.
setup $(STAMP):
	$(PYTHON) kit.py setup

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis autograder.zip starter
