# The two commands of the README: `make demo` and `make test`. Each sets up .venv on first use:
# `make demo` installs the runtime and the demo's needs only (the `demo` extra); `make test` adds the
# dev extras (Lightning, moto, onnx, ... for the interop tests) to the same environment.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BIN)/.installed-demo: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[demo]'
	touch $@

$(BIN)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

.PHONY: setup demo test
setup: $(BIN)/.installed-dev

demo: $(BIN)/.installed-demo
	$(BIN)/python examples/demo.py

# Two processes, whole files each (--dist loadfile: a file's module fixtures, such as a distributed
# job several tests assert on, run once). Alone, the suite keeps about one core busy.
test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
