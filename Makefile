# Two commands on a fresh machine: `make run` (web chat at http://127.0.0.1:8000) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install dev lock lint format check-flows bench clean

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

# Installs come from the lock files (every version pinned, every file's hash checked); the
# project itself goes in on top, editable, without resolving anything again.
$(VENV)/.installed: pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: pyproject.toml requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

# After changing dependencies in pyproject.toml: pin them again (needs the package index).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "pip-tools>=7.4"
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	  --no-emit-find-links -o requirements.txt pyproject.toml
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	  --no-emit-find-links --extra dev -o requirements-dev.txt pyproject.toml

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
