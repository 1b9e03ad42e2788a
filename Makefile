# cmkd: `make reproduce` and `make test` set everything up on a fresh machine (a .venv here).
SHELL := /bin/bash
PROFILE ?= default
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmkd-installed

.PHONY: help setup lock reproduce test unit nbval notebooks lab bench lint clean

help:
	@echo "make reproduce [PROFILE=default|smoke|paper|<any folder of params/>] [SET=\"06.epochs=3\"]"
	@echo "                                             run every notebook, write reports/<profile>/"
	@echo "make test                                     unit tests + nbval on every notebook"
	@echo "make lab                                      JupyterLab on the project"
	@echo "make lock                                     regenerate requirements.lock from pyproject.toml"
	@echo "make notebooks                                regenerate stored notebook outputs (smoke)"
	@echo "make bench                                    speed benchmarks -> reports/bench/BENCH.md"

# The environment: created when missing, reinstalled when the lock or pyproject.toml changes.
# requirements.lock pins every package (transitive ones too) with hashes; uv installs exactly it.
# uv itself comes from the same lock (its lines are cut out and installed by pip, hash-checked).
# --compile-bytecode: every package is compiled once here (about 90 CPU s), so that no process
# compiles torch & co. again on import (about 25 CPU s each without it, and a notebook run starts
# three: where PYTHONDONTWRITEBYTECODE is set, nothing compiled on import is ever kept).
LOCK := requirements.lock
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \
		"cmkd: requirements.lock is resolved for Python 3.11, but $(PYTHON) is Python " \
		+ sys.version.split()[0] + "; install python3.11 or run make PYTHON=/path/to/python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@awk '/^uv==/{on=1} on{print} on && !/\\$$/{exit}' $(LOCK) > $(VENV)/uv-from-lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r $(VENV)/uv-from-lock.txt
	$(VENV)/bin/uv pip sync --quiet --compile-bytecode --python $(PY) --require-hashes $(LOCK)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

reproduce: $(STAMP)
	$(VENV)/bin/cmkd reproduce --profile $(PROFILE) $(if $(ONLY),--only $(ONLY)) $(if $(FORCE),--force) \
		$(foreach s,$(SET),--set $(s))

test: $(STAMP)
	$(VENV)/bin/ruff check lib tests
	TQDM_DISABLE=1 MPLBACKEND=Agg $(PY) -m pytest tests notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=40

unit: $(STAMP)
	TQDM_DISABLE=1 MPLBACKEND=Agg $(PY) -m pytest tests -p no:cacheprovider

nbval: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest notebooks --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=40

notebooks: $(STAMP)
	$(VENV)/bin/cmkd refresh-notebooks $(if $(ONLY),--only $(ONLY))

# Root (containers, CI images) needs --allow-root; LAB_ARGS passes anything else through.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Regenerate requirements.lock from pyproject.toml (CPython 3.11, every OS, with hashes).
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes --quiet -o $(LOCK)

bench: $(STAMP)
	$(PY) -m cmkd.bench $(ONLY)

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests

clean:
	rm -rf reports/smoke reports/*/notebooks reports/*/.state reports/*/scratch
