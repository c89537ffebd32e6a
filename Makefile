# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test unit lint services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

## run: every service in one process on the embedded defaults (http://127.0.0.1:8080)
run: $(VENV)/.installed
	$(BIN)/energy-tracker up

## test: install the test extras, start what the tests need, run the whole suite
test: $(VENV)/.installed-test services
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

## unit: the fast tier only (no servers)
unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/unit

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

## services: start the local servers the contract and e2e tests use, if they are down
services:
	@bash scripts/ensure-services.sh

clean:
	rm -rf $(VENV) .energy-tracker .pytest_cache .ruff_cache
