# scribe-pipeline: the commands the README names.  Everything installs itself on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := .cache
CONFIG ?= conf/events.toml
export PIP_CACHE_DIR := $(CURDIR)/$(CACHE)/pip

.PHONY: install run test lint bench crash-test services services-stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/ensure-system-packages
	scripts/ensure-system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/pipeline run --config $(CONFIG)

test: install
	scripts/run-tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	scripts/run-bench

# Events into Cassandra: the bare driver's ceiling, the sink, the whole consumer, end to end
# (docs/benchmarks.md).  Its keyspace is dropped afterwards.
.PHONY: bench-materialize
bench-materialize: install
	$(BIN)/pipeline services start --only cassandra
	$(BIN)/pipeline bench materialize

# The multi-host tests on a local ZooKeeper ensemble and Cassandra cluster
# (conf/services/cluster.toml), started before and stopped after, also when tests fail.
.PHONY: cluster-test
cluster-test: install
	scripts/run-cluster-tests

crash-test: install
	CRASH_ROUNDS=$${CRASH_ROUNDS:-200} $(BIN)/pytest -m crash tests

services: install
	$(BIN)/pipeline services start

services-stop: install
	$(BIN)/pipeline services stop

clean:
	rm -rf $(VENV) var build *.egg-info .mypy_cache .ruff_cache .pytest_cache
