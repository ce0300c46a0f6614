# fedledger — `make demo` runs the whole mission; `make test` runs every check.
# Both bootstrap what they need on first use (.venv, node_modules, Debian test tools)
# and are quick when it is already there.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
FORGE := ./node_modules/.bin/forge
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?=
export FOUNDRY_OFFLINE := true

.PHONY: demo test lint fmt bootstrap venv node apt-tools contracts contracts-check \
        forge-test forge-test-deep gas-snapshot gas-check sol-fmt sol-lint slither pytest bench bench-venv clean

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

## contracts: compile with Hardhat; fail if the artifact the Python package ships is stale
contracts: bootstrap
	npx --no-install hardhat compile --quiet
	$(PYTHON) scripts/export_artifacts.py --check

## contracts-write: compile and refresh client/fedledger/chain/abi/TrainingLedger.json (after editing contracts/)
contracts-write: bootstrap
	npx --no-install hardhat compile --quiet
	$(PYTHON) scripts/export_artifacts.py

## forge-test: unit, fuzz and invariant tests (default profile, ~10 s)
forge-test: node
	$(FORGE) test --offline

## forge-test-deep: 5,000 fuzz runs; up to 10,000 invariant runs, each invariant capped at 400 s (~20 min on 2 cores)
forge-test-deep: node
	FOUNDRY_PROFILE=deep $(FORGE) test --offline

# Gas of the unit tests only: a fuzz or invariant campaign draws inputs from the bytecode's
# constants (its metadata hash included), so its mean gas moves with any edit of the source.
GAS_TESTS = --no-match-test 'testFuzz_|invariant_'

gas-snapshot: node
	$(FORGE) snapshot --offline $(GAS_TESTS)

gas-check: node
	$(FORGE) snapshot --offline --check $(GAS_TESTS)

sol-fmt: node
	$(FORGE) fmt contracts

sol-lint: node
	$(FORGE) fmt --check contracts
	# forge lint writes ABI-only artifacts: in a cache of its own, so forge test never reuses them
	FOUNDRY_OUT=out-lint FOUNDRY_CACHE_PATH=cache_forge_lint $(FORGE) lint --offline

## slither: fails on any high/medium finding not explained beside the code
slither: bootstrap
	bash scripts/slither.sh

lint: venv sol-lint
	$(BIN)/ruff check client backend tests benchmarks
	$(BIN)/ruff format --check client backend tests benchmarks
	$(BIN)/mypy client backend
	$(BIN)/lint-imports

fmt: venv sol-fmt
	$(BIN)/ruff format client backend tests benchmarks
	$(BIN)/ruff check --fix client backend tests benchmarks

pytest: bootstrap apt-tools
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

test: bootstrap apt-tools lint contracts forge-test gas-check slither pytest

demo: bootstrap
	$(BIN)/fedledger demo

## bench-venv: Flower in its own venv (.venv-bench), the baseline benchmarks/aggregate.py runs
## against; flwr 1.42 pins its own Ray, so it stays out of the project's venv.
bench-venv: .venv-bench/.stamp
.venv-bench/.stamp:
	@test -x .venv-bench/bin/python || $(PY) -m venv .venv-bench
	.venv-bench/bin/pip install -q numpy 'flwr==1.42.0'
	@touch $@

bench: bootstrap bench-venv
	for b in benchmarks/[!_]*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf artifacts cache cache_forge out .pytest_cache .mypy_cache .ruff_cache
