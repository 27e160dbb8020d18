# convlab: `make up` runs the API and a worker on the embedded default; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test install lint compose-check clean

up: $(STAMP)
	$(BIN)/python -m core.migrate
	PATH="$(abspath $(BIN)):$$PATH" exec scripts/up.sh

test: lint
	scripts/ensure-services.sh
	$(BIN)/pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("convlab needs Python 3.11 to 3.13") if not (3, 11) <= sys.version_info[:2] <= (3, 13) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api worker models core

clean:
	rm -rf $(VENV) var
