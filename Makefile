# make demo  — the suite's main job: NVAE quick preset on MNIST (a few minutes on a CPU)
# make test  — lint, then the test suite, reference tier and slow end-to-end tests included (what CI runs)
# make test-fast — the test suite without the tests marked slow
# make lint  — ruff: lint rules and formatting (ruff.toml); `make test` runs it first
# make bench — performance figures (ratios measured in one run)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
export GENMODELS_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo lint test test-fast bench install clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The reference tier (PyTorch and the field's packages) only for the tests.
$(VENV)/.reference: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,reference]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m experiments.nvae_mnist --preset=quick --logdir=runs/demo

# Test processes (pytest-xdist; whole files per process so module fixtures are built once).
# TEST_WORKERS=0 runs in this process; TEST_ARGS narrows the run (test IDs, -k ...).
TEST_WORKERS ?= 2
TEST_ARGS ?= tests
PYTEST := $(PY) -m pytest $(TEST_ARGS) -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# ruff (ruff.toml): fix with `ruff check --fix .` and `ruff format .`.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint $(VENV)/.reference
	$(PYTEST) --durations=30

test-fast: $(VENV)/.reference
	$(PYTEST) -m "not slow" --durations=15

bench: install
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf runs .pytest_cache
