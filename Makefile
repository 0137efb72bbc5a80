# Two commands for a fresh machine:  `make demo` (the main job)  and  `make test` (the suite).
# The packages live outside the clone in one shared virtualenv, keyed by a hash of pyproject.toml,
# so a fresh clone with an unchanged pyproject.toml reuses it in seconds. `.venv` is this clone's
# own small virtualenv layered on it (.ci/clone_venv.py): `source .venv/bin/activate`, then every
# README command works, and each clone imports its own `vremd`.
SHELL := /bin/bash
PYTHON_BASE ?= python3.11
VENV_KEY := $(shell sha256sum pyproject.toml | cut -c1-16)
VENV_HOME ?= $(HOME)/.cache/vremd-venv
VENV_REAL := $(VENV_HOME)/$(VENV_KEY)
PY := .venv/bin/python
export RAY_USAGE_STATS_ENABLED := 0
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: demo test test-fast bench venv clean-venv mlflow-ui tracking-server

# `venv` is cheap when the shared environment exists: it (re)builds .venv, this clone's layer on it.
# Nothing in the shared environment names a clone, so clones sharing it never import each other's code.
venv:
	@if [ ! -f "$(VENV_REAL)/.complete" ]; then \
	  echo "Creating the environment in $(VENV_REAL) (about 2 minutes, once per pyproject.toml)"; \
	  rm -rf "$(VENV_REAL)" && mkdir -p "$(VENV_HOME)" && \
	  $(PYTHON_BASE) -m venv "$(VENV_REAL)" && \
	  "$(VENV_REAL)/bin/pip" install -q --upgrade pip && \
	  "$(VENV_REAL)/bin/pip" install -q -r <("$(VENV_REAL)/bin/python" .ci/requirements.py) && \
	  touch "$(VENV_REAL)/.complete" || exit 1; \
	fi
	@"$(VENV_REAL)/bin/python" .ci/clone_venv.py "$(VENV_REAL)"

demo: venv
	.venv/bin/dvc repro
	@$(PY) -m pipeline.show_results

# pytest exits 5 when it collected nothing: that is a failure, not a pass.
test: venv
	@$(PY) -m pytest -q -m "not gpu" --timeout=900 tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not gpu" tests

bench: venv
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

mlflow-ui: venv
	.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# A team's server: PostgreSQL backend store + served artifacts in tracking/, on 127.0.0.1:5000 until Ctrl-C;
# then `export MLFLOW_TRACKING_URI=http://127.0.0.1:5000` where you train (see docs/ray_cluster.md).
tracking-server: venv
	$(PY) pipeline/tracking_server.py --root tracking --port 5000

clean-venv:
	rm -rf "$(VENV_REAL)" .venv
