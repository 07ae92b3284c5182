# Cashier-integrity MLOps: `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp

LOCK := requirements.lock
# The one command that writes the lock; `make lock` runs it, tests check the header matches.
UV_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --extra test --group dev --generate-hashes \
	$(UV_TARGET)
# Each image installs (pip --require-hashes --no-deps) a closure generated from its small
# top-level .in list, constrained by the lock: the same versions and hashes, less of them.
IMAGE_REQUIREMENTS := components/requirements.txt serving/requirements.txt

# Every version comes from the lock (hash-checked); the project itself is installed editable
# with the lock's setuptools, so nothing outside the lock is resolved at install time.
$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps -r $(LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	@touch $@

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: venv
venv: $(STAMP) ## create .venv (if missing) and install exactly requirements.lock plus the project

.PHONY: lock
lock: $(STAMP) ## re-resolve requirements.lock from pyproject.toml (UPGRADE="--upgrade" or "--upgrade-package NAME"), then the image requirements
	$(UV_COMPILE) $(UPGRADE) -o $(LOCK)
	@for out in $(IMAGE_REQUIREMENTS); do \
		echo "$(VENV)/bin/uv pip compile $${out%.txt}.in -c $(LOCK) -> $$out"; \
		$(VENV)/bin/uv pip compile -q $${out%.txt}.in -c $(LOCK) --generate-hashes $(UV_TARGET) \
			-o $$out || exit 1; \
	done

.PHONY: test
test: $(STAMP) ## run the whole test suite (unit, integration, e2e); container tests: make test-containers
	$(PY) -m pytest -q --ignore=tests/containers

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
