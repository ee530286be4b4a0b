# Two commands on a fresh clone: `make demo` and `make test`.
# Both create the virtual environment .venv by themselves the first time.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench screenshots autograder clean

demo: $(STAMP)
	$(PY) -m lab2_udp.demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	for script in bench/*.py; do $(PY) $$script || exit 1; done

# docs/lab1.png and docs/lab2.png, taken on a private Xvfb screen (needs xvfb and imagemagick).
screenshots: $(STAMP)
	$(PY) -m tools.screenshots

# Gradescope's autograder.zip: the kit, its tests, setup.sh and run_autograder.
autograder: $(STAMP)
	$(PY) -m tools.autograder.build autograder.zip

# Reinstall only when the dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis autograder.zip
