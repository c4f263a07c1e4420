# Set-up and checks. `make demo`, `make test` and `make test-fast` each do all the set-up they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo serve test test-fast lint venv deps bench

$(BIN)/rxllm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/rxllm

venv: $(BIN)/rxllm

serve: venv
	$(BIN)/rxllm serve

demo: venv
	$(BIN)/rxllm chat "Explain in two sentences why streaming makes an LLM app feel fast."

# Servers and browsers the tests start themselves (PostgreSQL, Redis, nginx, Chromium, node packages).
deps:
	./scripts/install-services.sh
	@if [ -x scripts/install-test-deps.sh ]; then ./scripts/install-test-deps.sh; fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/module_tables.py --check

test: lint deps
	$(BIN)/pytest

# The checks and every test that needs no PostgreSQL, Redis, nginx, Chromium or node and
# starts no process of its own (markers `services` and `slow`, docs/testing.md): no `deps`.
test-fast: lint
	$(BIN)/pytest -m "not services and not slow"
