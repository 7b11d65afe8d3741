# Every target does its own set-up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned (constraints.txt) so pip takes the local CPU build and never pulls multi-GB CUDA wheels.
PIP_INSTALL := $(BIN)/pip install -q -c constraints.txt

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/learn2synth demo --out demo_out

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(PIP_INSTALL) -e '.[dev,bench]'
	$(BIN)/python benchmarks/synth_throughput.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
