# Two commands on a fresh machine: `make run` (web chat at http://127.0.0.1:8000) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install dev lint format check-flows bench clean

run: install
	$(BIN)/yarigai serve

test: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bot
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/yarigai flows check flows
	$(BIN)/pytest

install: $(VENV)/.installed

dev: $(VENV)/.dev

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: dev
	$(BIN)/ruff check .
	$(BIN)/mypy bot
	$(BIN)/lint-imports

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check-flows: install
	$(BIN)/yarigai flows check flows

bench: dev
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
