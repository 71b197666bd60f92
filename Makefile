# The two commands: `make run` and `make test`. Both set up .venv when missing or stale:
# `make run` installs the runtime and the sandbox (`.[sandbox]`), `make test` the development
# tools too (`.[dev]`). Each has its own stamp, so switching between them installs what the
# other did not.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck unit bench clean docs reference release-check chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sandbox]'
	@touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(DEV_STAMP)

## run: migrate, create the demo workspace (once), start Grantflow on SQLite with the sandbox
run: $(RUN_STAMP)
	@GRANTFLOW_LOG_FORMAT=$${GRANTFLOW_LOG_FORMAT:-console} $(BIN)/grantflow demo
	GRANTFLOW_LOG_FORMAT=$${GRANTFLOW_LOG_FORMAT:-console} $(BIN)/grantflow serve --sandbox

## test: lint, type-check, and the whole suite on SQLite and PostgreSQL (the type check runs
## beside the suite, its report printed after it: one core is free while the suite starts)
PYTEST_ARGS ?= -n 4 --dist worksteal --durations=15

test: $(DEV_STAMP) lint chromium
	@report=$$(mktemp); $(BIN)/mypy >$$report 2>&1 & typecheck=$$!; \
	$(BIN)/pytest $(PYTEST_ARGS); tests=$$?; \
	wait $$typecheck; types=$$?; echo "mypy:"; cat $$report; rm -f $$report; \
	[ $$tests -eq 0 ] && [ $$types -eq 0 ]

## chromium: Debian's Chromium for the browser tests (tests/browser), installed with apt-get when
## missing — as root, or with sudo. Playwright never downloads a browser here. When it cannot be
## installed, CI=true fails; locally the browser tests are skipped.
CHROMIUM ?= /usr/bin/chromium

chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; \
	  else SUDO="none"; fi; \
	  if [ "$$SUDO" != none ]; then \
	    echo "installing chromium (Debian package) for the browser tests"; \
	    $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  fi; \
	  if [ ! -x "$(CHROMIUM)" ]; then \
	    echo "$(CHROMIUM) is missing and could not be installed (need root or sudo)"; \
	    case "$$CI" in true|1|yes) exit 1;; *) echo "the browser tests will be skipped";; esac; \
	  fi; \
	fi

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

## docs: serve the docs site on http://127.0.0.1:8001 (reference pages regenerated first)
docs: reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8001

## reference: regenerate docs/reference from the code (make test fails when it is stale)
reference: $(DEV_STAMP)
	$(BIN)/python scripts/docs_reference.py --write

## release-check: build the wheel and sdist, install the wheel in a fresh virtualenv, start it
release-check: $(DEV_STAMP)
	$(BIN)/python scripts/release_check.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
