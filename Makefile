# The two commands of the README: `make demo` and `make test`. Each sets up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

.PHONY: setup demo test
setup: $(BIN)/.installed

demo: setup
	$(BIN)/python examples/demo.py

# Two processes, whole files each (--dist loadfile: a file's module fixtures, such as a distributed
# job several tests assert on, run once). Alone, the suite keeps about one core busy.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
