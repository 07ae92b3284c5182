# Cashier-integrity MLOps: `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q -e '.[test]'
	@touch $@

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: venv
venv: $(STAMP) ## create .venv (if missing) and install the project with test extras

.PHONY: test
test: $(STAMP) ## run the whole test suite (unit, integration, e2e)
	$(PY) -m pytest -q

.PHONY: test-unit
test-unit: $(STAMP) ## run the fast unit tests only
	$(PY) -m pytest -q tests/unit

.PHONY: lint
lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

.PHONY: format
format: $(STAMP) ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Area targets (pipeline, serving, monitoring, delivery, benchmarks) live beside their scripts.
include $(sort $(wildcard scripts/make/*.mk))
