# The two quick-start commands: `make train` and `make test`.
# Both create .venv (unless a virtual environment is already active) and install the project
# with its dev extra when pyproject.toml changed since the last install.
SHELL := /bin/bash
PYTHON ?= python3

ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dynfx-installed

.PHONY: setup train test test-all bench

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ""

train: setup
	$(PY) train.py experiment=quickstart

bench: setup
	$(PY) -m pip install -e ".[dev,bench]"
	$(PY) -m pip install --no-deps "diffFx-pytorch==0.0.5"
	$(PY) bench/bench_processors.py --device cpu --json bench/results-cpu.json
