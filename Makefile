# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of
# those. The venv is made and filled on first use; nothing relies on what is installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DISTS  := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml)
EDITABLES := $(foreach p,$(DISTS),-e $(dir $(p)))

.PHONY: help install run test test-dates test-unit test-integration test-e2e lint fmt typecheck proto proto-check \
        proto-lint proto-breaking check clean bench

help:
	@echo "make run    - start the whole stack on embedded NATS + PostgreSQL (Ctrl-C stops it)"
	@echo "make test   - lint, types, contract checks and the whole test suite"
	@echo "make proto  - regenerate libs/contracts from proto/"

$(STAMP): pyproject.toml constraints.txt $(DISTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q -c constraints.txt --group dev $(EDITABLES)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/accrue run

## The README's test command: everything CI checks.
test: install check
	$(BIN)/pytest -q

## Every date-sensitive test (marker `dates`) under each awkward instant of
## libs/testing/src/accrue/testing/instants.py; `make test` runs at one of them, drawn per run.
test-dates: install
	@for instant in $$($(BIN)/python -c 'from accrue.testing.instants import INSTANTS; print(*INSTANTS)'); do \
	  echo "== ACCRUE_TEST_INSTANT=$$instant"; \
	  ACCRUE_TEST_INSTANT=$$instant $(BIN)/pytest -q -m dates || exit 1; \
	done

test-unit: install
	$(BIN)/pytest -q tests/unit

test-integration: install
	$(BIN)/pytest -q tests/integration

test-e2e: install
	$(BIN)/pytest -q tests/e2e

check: lint typecheck proto-check proto-lint proto-breaking

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy libs/money/src libs/pricing/src libs/telemetry/src libs/runtime/src libs/db/src \
	  libs/eventbus/src libs/mdprojection/src libs/embedded/src libs/testing/src libs/identity/src \
	  services/*/src tools/cli/src

proto: install
	$(BIN)/python tools/proto.py gen

proto-check: install
	$(BIN)/python tools/proto.py check

proto-lint: install
	$(BIN)/python tools/proto.py lint

proto-breaking: install
	$(BIN)/python tools/proto.py breaking

## Benchmarks are scripts, not tests: each starts its own servers and prints its figures beside
## the machine's raw limit (see docs/performance/). BENCH=<name> picks one, e.g. BENCH=billing_run.
bench: install
	@test -n "$(BENCH)" || { echo "usage: make bench BENCH=<$$(ls benchmarks | grep -v common | sed 's/.py$$//' | paste -sd'|')>"; exit 2; }
	$(BIN)/python benchmarks/$(BENCH).py

clean:
	rm -rf $(VENV) .build .pytest_cache .mypy_cache .ruff_cache
