# convlab: `make up` runs the API and a worker on the embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVER_STAMP := $(VENV)/.installed-server
MLFLOW := .bench/mlflow

.PHONY: up test install lint compose-check clean bench soak

up: $(SERVER_STAMP)
	$(BIN)/python -m commands.migrate
	PATH="$(abspath $(BIN)):$$PATH" exec scripts/up.sh

# The suite in TEST_PROCESSES processes, a test file to each at a time (its shared stack stays in
# one process): most tests wait on real processes and services, so two of them fill two cores.
TEST_PROCESSES ?= 2

# Every test's duration is kept in test-artifacts/junit.xml; the seconds per file and the
# slowest tests are printed at the end, whatever the outcome.
test: lint
	scripts/ensure-services.sh
	mkdir -p test-artifacts
	status=0; $(BIN)/pytest --numprocesses $(TEST_PROCESSES) --dist loadfile \
		--junitxml test-artifacts/junit.xml || status=$$?; \
	$(BIN)/python scripts/durations.py test-artifacts/junit.xml; exit $$status

# The compose stack on this machine's Docker engine (installed and started when root), and
# ensure-services.sh and `make up` on a fresh Debian container; all are part of `make test` too.
.PHONY: compose-test
compose-test: $(STAMP)
	$(BIN)/pytest tests/test_compose_up.py tests/test_ensure_services.py tests/test_fresh_machine.py

install: $(STAMP)

# The server and the client (a distribution of its own) into .venv; `make up` installs only
# them, `make install` (and so test, lint, bench) the test extras too.
define INSTALL
	$(PYTHON) -c 'import sys; sys.exit("convlab needs Python 3.11 to 3.13") if not (3, 11) <= sys.version_info[:2] <= (3, 13) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client -e '.$(1)'
	# A .venv from before the split: uninstalling the old convlab took its `convlab` script along.
	test -x $(BIN)/convlab || $(BIN)/pip install --quiet --force-reinstall --no-deps -e ./client
endef

$(SERVER_STAMP): pyproject.toml client/pyproject.toml
	$(call INSTALL,)
	touch $@

$(STAMP): pyproject.toml client/pyproject.toml
	$(call INSTALL,[test])
	touch $@ $(SERVER_STAMP)

# Benchmarks (about ten minutes here, after the installs): figures and ratios measured side by
# side; see BENCHMARKS.md.
bench: $(STAMP) $(MLFLOW)/bin/mlflow
	scripts/ensure-services.sh
	$(BIN)/python bench/overhead.py --rounds 2 --epochs 4
	$(BIN)/python bench/many.py --count 8 --epochs 1
	$(BIN)/python bench/dispatch.py --samples 10
	$(BIN)/python bench/queries.py --seconds 5 --mlflow-python $(MLFLOW)/bin/python
	$(BIN)/python bench/training_speed.py --rounds 1 --epochs 3
	$(BIN)/python bench/checkpoints.py
	$(BIN)/python bench/api_processes.py --processes 2
	$(BIN)/python bench/improved.py --epochs 3
	$(BIN)/python bench/pruners.py

# A soak with random faults (not in CI): `make soak SEED=N MINUTES=M`; see BENCHMARKS.md.
SEED ?= 1
MINUTES ?= 10
soak: $(STAMP)
	scripts/ensure-services.sh
	$(BIN)/python bench/soak.py --seed $(SEED) --minutes $(MINUTES)

# MLflow only for the query benchmark's comparison, in its own environment.
$(MLFLOW)/bin/mlflow:
	$(PYTHON) -m venv $(MLFLOW)
	$(MLFLOW)/bin/pip install --quiet 'mlflow>=3.17,<4'

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api worker models core store jobs views commands client
	$(BIN)/lint-imports --no-cache  # every import points down; the API loads no TensorFlow; only store/ runs SQL
	$(BIN)/python scripts/check-cycles.py  # and no module imports one that imports it back
	scripts/check-subjects.sh

clean:
	rm -rf $(VENV) var .bench
