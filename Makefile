# feedpipe developer entry points; each does all of its set-up, on a fresh Debian/Ubuntu machine
# too (as root; otherwise scripts/bootstrap.sh names the apt-get command to run):
#   make run     system packages, venv + pinned deps, Kafka jars, then `feedpipe up`
#                (local Kafka + Redis + worker + API, the shared data replayed)
#   make test    the same set-up (plus Chromium), then ruff, mypy and pytest
#                (pytest starts its own Kafka/Redis, see tests/conftest.py)
#   make setup   set-up only;  make imports: the import-linter contracts (part of make test)
#   make down    `feedpipe down`;  make wipe: `feedpipe down --wipe`
# When everything is there already, the set-up takes about a second (no apt-get, no pip).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.feedpipe-installed
# Which system packages scripts/bootstrap.sh checks: `run` (no browser) or `test`.
PROFILE ?= run
test pytest: PROFILE = test

.PHONY: system setup test lint typecheck imports pytest run down wipe jars

system:
	@bash scripts/bootstrap.sh $(PROFILE)

setup: system $(STAMP) jars

$(STAMP): requirements.lock pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e '.[dev]'
	touch $@

jars: $(STAMP)
	@$(BIN)/python -m ops.infra jars

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

pytest: setup
	$(BIN)/pytest -q

test: setup lint typecheck imports pytest

run: setup
	$(BIN)/feedpipe up

down:
	$(BIN)/feedpipe down

wipe:
	$(BIN)/feedpipe down --wipe
