# gmi-gateway — every developer and CI task. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install lock demo test lint format tools openapi bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required ($(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the gateway with its dev tools (versions: constraints.txt)

lock: ## Re-resolve constraints.txt from pyproject.toml (the newest versions its ranges allow)
	@tmp=$$(mktemp -d) && $(PYTHON) -m venv $$tmp \
	&& $$tmp/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' \
	&& { echo "# Every install (make install, the Dockerfile) uses exactly these versions."; \
	     echo "# Resolved by 'make lock' from pyproject.toml on Python $$($$tmp/bin/python -c 'import platform; print(platform.python_version())')."; \
	     $$tmp/bin/python -m pip freeze --exclude-editable; } > constraints.txt; \
	status=$$?; rm -rf $$tmp; exit $$status

demo: install ## Run the gateway on the built-in simulator (no Redis, no GMI key, no network)
	$(BIN)/gmi-gateway demo

tools: ## Find (or install) the programs the tests need: redis-server, promtool
	@scripts/ensure-tools

lint: install ## ruff, ruff format --check, mypy --strict, import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install tools lint ## The whole suite: lint, then every test (what .ci/run runs)
	$(BIN)/gmi-gateway openapi --check
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered

format: install ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: install ## Regenerate openapi/openapi.json from the app
	$(BIN)/gmi-gateway openapi

bench: install ## Load benchmark: gateway vs simulator, nginx and bare Litestar (needs wrk, nginx, redis-server)
	$(BIN)/python bench/run.py

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
