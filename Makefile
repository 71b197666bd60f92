# The two commands: `make run` and `make test`. Both set up .venv when missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: migrate, create the demo workspace (once), and start Grantflow on SQLite
run: $(STAMP)
	@GRANTFLOW_LOG_FORMAT=$${GRANTFLOW_LOG_FORMAT:-console} $(BIN)/grantflow demo
	GRANTFLOW_LOG_FORMAT=$${GRANTFLOW_LOG_FORMAT:-console} $(BIN)/grantflow serve

## test: lint, type-check, and the whole suite on SQLite and PostgreSQL
PYTEST_ARGS ?= -n 4 --durations=15

test: $(STAMP) lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
