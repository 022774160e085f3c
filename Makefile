# roadcast: every target bootstraps .venv itself; a second run installs nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A pinned torch first. Where pip's configured wheels hold the CPU build (this project's
# CI machines) that is what installs; from plain PyPI on Linux torch==2.13.0 is the
# multi-GB CUDA build: there use TORCH_SPEC='torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cpu' (CPU only) or .../whl/cu126 (a GPU machine).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.roadcast-installed
SHARED_DATA := $(abspath ../shared/data)
export ROADCAST_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),$(HOME)/.cache/roadcast/data)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast bench lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/roadcast demo $(DEMO_ARGS)

# Test workers (pytest-xdist): one per core, at most 4 (each starts its own broker and
# Prefect server); PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) $(if $(filter auto logical,$(PYTEST_WORKERS)),--maxprocesses 4)

test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m 'not slow' $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info
