# nomad-triton developer entry points. Everything runs inside .venv, built from a Python whose
# libpython matches the one PyTriton's python-backend stub loads (see ../shared/FACTS.md).
SHELL := /bin/bash
PYTHON_BASE ?= $(shell if [ -x /usr/bin/python3.11 ]; then echo /usr/bin/python3.11; else command -v python3.11; fi)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-unit test-e2e lint demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check nomad_triton tests bench examples

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-e2e: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

# `make demo`: devcluster up, deploy the CPU example on real PyTriton, infer, scale to 2, status.
demo: venv
	bash examples/demo.sh

# `make bench` runs all of bench/p*_*.py; `make bench ONLY=p6` runs one.
bench: venv
	$(PY) bench/run_all.py $(ONLY)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
