# nomad-triton developer entry points. Everything runs inside .venv, built from a Python whose
# libpython matches the one PyTriton's python-backend stub loads (see ../shared/FACTS.md).
SHELL := /bin/bash
PYTHON_BASE ?= $(shell if [ -x /usr/bin/python3.11 ]; then echo /usr/bin/python3.11; else command -v python3.11; fi)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Optional extras on top of dev, e.g. `make test EXTRAS="torch tensorflow"` (what .ci/run does): the
# framework backends are ~7 GB of wheels, so everyday venvs leave them out (docs/triton-repository.md).
EXTRAS ?=
EXTRA_FLAGS := $(foreach e,$(EXTRAS),--extra $(e))
STAMP := $(VENV)/.installed$(if $(strip $(EXTRAS)),-$(subst $(eval) ,-,$(strip $(EXTRAS))))
# uv works on this venv (not one of its own) and never downloads a Python: the interpreter is chosen above.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# The uv cache may sit on another filesystem than the checkout; copying is what it would fall back to.
export UV_LINK_MODE ?= copy
# What the image installs: the runtime closure only, then the build tools for the project's own wheel.
DOCKER_REQS := docker/requirements.txt
DOCKER_BUILD_REQS := docker/build-requirements.txt
EXPORT := $(UV) export --frozen --format requirements-txt --no-emit-project --no-header

.PHONY: venv lock lock-upgrade test test-unit test-e2e test-latest lint demo fleet-demo bench clean

venv: $(STAMP)

# Installs exactly uv.lock (dev extra and build group included) and nothing else: `uv sync` removes
# what the lock does not list. uv itself comes from the lock's own hashes (tools/uv_requirement.py).
# Step 1 installs the locked dependencies (setuptools among them); step 2 builds the project
# against those, without build isolation, so no build step resolves versions from the index.
$(STAMP): uv.lock pyproject.toml
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	test -x $(UV) || { $(PYTHON_BASE) tools/uv_requirement.py > $(VENV)/uv-requirement.txt \
	  && $(PY) -m pip install -q --disable-pip-version-check --no-deps --require-hashes -r $(VENV)/uv-requirement.txt; }
	$(UV) sync --frozen --extra dev $(EXTRA_FLAGS) --python $(PY) --no-install-project -q
	$(UV) sync --frozen --extra dev $(EXTRA_FLAGS) --python $(PY) --no-build-isolation -q
	rm -f $(VENV)/.installed*
	touch $(STAMP)

# `make lock`: re-resolve after a pyproject.toml change, keeping every other pin; `make lock-upgrade`
# moves every pin to the newest version the ranges allow. Both regenerate the image's requirements.
lock: venv
	$(UV) lock
	$(MAKE) --no-print-directory docker-requirements

lock-upgrade: venv
	$(UV) lock --upgrade
	$(MAKE) --no-print-directory docker-requirements

.PHONY: docker-requirements
docker-requirements:
	{ echo "# Generated from uv.lock by 'make lock' (uv export); do not edit. Runtime closure, no dev tools."; \
	  $(EXPORT) --no-dev --no-default-groups; } > $(DOCKER_REQS)
	{ echo "# Generated from uv.lock by 'make lock' (uv export); do not edit. Builds the project's wheel."; \
	  $(EXPORT) --no-dev --only-group build; } > $(DOCKER_BUILD_REQS)

lint: venv
	$(VENV)/bin/ruff check nomad_triton tests bench examples

test: venv lint
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

test-e2e: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/e2e

# The ranges in pyproject.toml, at their newest: a throwaway venv resolved from the index today (the
# lock ignored), unit tests run in it, and a report of what moved and what broke. It never fails: it
# tells you which range to narrow (or which code to fix) before `make lock-upgrade` does it for real.
test-latest: venv
	$(PY) tools/test_latest.py

# `make conformance`: devcluster driven by the official Go client (tests/conformance, Go 1.26+ and
# the Go module proxy needed); it starts and stops a devcluster of its own. Against a real Nomad:
# `NOMAD_TOKEN=... .venv/bin/python tools/conformance.py --addr https://nomad:4646`.
.PHONY: conformance
conformance: venv
	$(PY) tools/conformance.py
# `make examples`: regenerate examples/prometheus/*.yml and examples/grafana/nomad-triton.json from
# nomad_triton.observe (the committed files must equal the generators' output; a unit test checks).
.PHONY: examples
examples: venv
	$(PY) -m nomad_triton.observe.examples

# `make demo`: devcluster up, deploy the CPU example on real PyTriton, infer, scale to 2, status.
demo: venv
	bash examples/demo.sh

# `make fleet-demo`: devcluster with 3 simulated GPU pools + the CPU pool, a 3-stage fleet deploy, status.
fleet-demo: venv
	bash examples/fleet-demo.sh

# `make bench` runs all of bench/p*_*.py; `make bench ONLY=p6` runs one.
bench: venv
	$(PY) bench/run_all.py $(ONLY)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
