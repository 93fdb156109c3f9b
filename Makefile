# make demo  — the suite's main job: NVAE quick preset on MNIST (a few minutes on a CPU)
# make test  — the test suite
# make bench — performance figures (ratios measured in one run)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
export GENMODELS_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench install clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m experiments.nvae_mnist --preset=quick --logdir=runs/demo

test: install
	$(PY) -m pytest tests -q

bench: install
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf runs .pytest_cache
