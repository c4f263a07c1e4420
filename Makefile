# Set-up and checks. `make demo` and `make test` each do all the set-up they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint venv bench

$(BIN)/rxllm: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/rxllm

venv: $(BIN)/rxllm

demo: venv
	$(BIN)/rxllm chat "Explain in two sentences why streaming makes an LLM app feel fast."

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest
