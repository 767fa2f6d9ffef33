# feedpipe developer entry points. Needs: python3 (3.11+) with venv, Java 17+, Maven (first
# jar fetch only) and redis-server; .ci/run installs the system packages on a fresh machine.
#   make setup   venv + pinned deps (requirements.lock) + Kafka jars + checks
#   make test    setup, then ruff, mypy, pytest (starts its own Kafka/Redis, see tests/conftest.py)
#   make run     setup, then `feedpipe up` (local Kafka + Redis + worker + API)
#   make down    `feedpipe down`;  make wipe: `feedpipe down --wipe` (deletes local state)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.feedpipe-installed

.PHONY: setup test lint typecheck pytest run down wipe jars check-tools

setup: $(STAMP) jars check-tools

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e '.[dev]'
	touch $@

jars: $(STAMP)
	$(BIN)/python -m ops.infra jars

check-tools:
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || \
	  { echo "redis-server missing: install with apt-get install -y redis-server" >&2; exit 1; }
	@command -v java >/dev/null || test -n "$$JAVA_HOME" || \
	  { echo "java missing: install with apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: setup lint typecheck pytest

run: setup
	$(BIN)/feedpipe up

down:
	$(BIN)/feedpipe down

wipe:
	$(BIN)/feedpipe down --wipe
