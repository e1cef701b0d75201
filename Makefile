# Developer and CI entry points. `make setup` builds .venv from scratch; `make test` runs every check CI runs, services included.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build lies on disk on the build machines; elsewhere pick the build for your hardware.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test lint unit clean demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e '.[dev,reference]'

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

unit:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every test: starts PostgreSQL, Slurm, Ceph S3 and dockerd (root, Debian packages), then lint and the suites.
test: setup
	bash .ci/test.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# The main job on the embedded default: synthetic workspace, local launcher, reference runtime, a local
# Prefect server (started on first use). Drop --yes to approve the plan in the Prefect UI or the terminal.
demo: setup
	$(BIN)/aoi-pipeline demo --yes
