# fedledger — `make demo` runs the whole mission; `make test` runs every check.
# Both bootstrap what they need on first use (.venv, node_modules, Debian test tools)
# and are quick when it is already there.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint fmt bootstrap venv node apt-tools contracts forge-test slither pytest bench clean

bootstrap: venv node

# The venv is rebuilt only when pyproject.toml changes. torch is installed first and pinned:
# pip takes the CPU build from local disk; an unpinned torch would pull a multi-GB CUDA build.
venv: $(VENV)/.stamp-bootstrap
$(VENV)/.stamp-bootstrap: pyproject.toml
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

node: node_modules/.stamp-bootstrap
node_modules/.stamp-bootstrap: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian tools the tests use as independent oracles (ipfs_cid) or drivers (chromium).
apt-tools:
	@bash scripts/ensure-apt.sh

contracts: bootstrap
	npx hardhat compile --quiet

forge-test: node
	bash scripts/forge-test.sh

slither: bootstrap contracts
	bash scripts/slither.sh

lint: venv
	$(BIN)/ruff check client backend tests benchmarks
	$(BIN)/ruff format --check client backend tests benchmarks
	$(BIN)/mypy client backend

fmt: venv
	$(BIN)/ruff format client backend tests benchmarks
	$(BIN)/ruff check --fix client backend tests benchmarks

pytest: bootstrap apt-tools
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

test: bootstrap apt-tools lint contracts forge-test slither pytest

demo: bootstrap
	$(BIN)/fedledger demo

bench: bootstrap
	for b in benchmarks/*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf artifacts cache cache_forge out .pytest_cache .mypy_cache .ruff_cache
