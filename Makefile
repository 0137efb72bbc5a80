# Two commands for a fresh machine:  `make demo` (the main job)  and  `make test` (the suite).
# The packages live outside the clone in one shared virtualenv, installed with hashes from requirements.lock
# (the whole environment pinned, `make lock` regenerates it from pyproject.toml) and keyed by a hash of both
# files, so a fresh clone with unchanged ones reuses it in seconds. `.venv` is this clone's
# own small virtualenv layered on it (.ci/clone_venv.py): `source .venv/bin/activate`, then every
# README command works, and each clone imports its own `vremd`.
SHELL := /bin/bash
PYTHON_BASE ?= python3.11
VENV_KEY := $(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
VENV_HOME ?= $(HOME)/.cache/vremd-venv
VENV_REAL := $(VENV_HOME)/$(VENV_KEY)
PY := .venv/bin/python
export RAY_USAGE_STATS_ENABLED := 0
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)

PIP_TOOLS := $(VENV_HOME)/pip-tools-7.6.2
POSEVAL ?=

.PHONY: demo test test-fast bench bench-gpu lock venv clean-venv mlflow-ui tracking-server

# `venv` is cheap when the shared environment exists: it (re)builds .venv, this clone's layer on it.
# Nothing in the shared environment names a clone, so clones sharing it never import each other's code.
# The shared environment is built by .ci/shared_env.sh: one build at a time (a lock in VENV_HOME), into
# its own folder, published complete by one rename, so `make venv`s running at once never break each other.
venv:
	@[ -f "$(VENV_REAL)/.complete" ] || bash .ci/shared_env.sh "$(VENV_REAL)" "$(PYTHON_BASE)"
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

# Every benchmark runs, whatever the others did; results.json and the README table are rewritten, and the
# exit status is non-zero at the end when a target was missed. POSEVAL=PATH: the official poseval checkout
# the evaluator is timed against (not measured without it).
bench: venv
	@$(PY) -m benchmarks.run $(if $(POSEVAL),--poseval "$(POSEVAL)"); rc=$$?; \
	  $(PY) -m benchmarks.report && exit $$rc

# On a machine with a GPU: every `--device cuda` figure in under 8 minutes, into gpu_results.json.
bench-gpu: venv
	bash benchmarks/gpu.sh gpu_results.json

# The lock: every package of the environment, pinned with hashes, from pyproject.toml (and its test extra)
# by pip-tools, resolved with pip's own configuration. Existing pins are kept unless pyproject.toml needs
# another version; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed.
lock:
	@if [ ! -x "$(PIP_TOOLS)/bin/pip-compile" ]; then \
	  rm -rf "$(PIP_TOOLS)" && $(PYTHON_BASE) -m venv "$(PIP_TOOLS)" && \
	  "$(PIP_TOOLS)/bin/pip" install -q pip-tools==7.6.2 || exit 1; \
	fi
	CUSTOM_COMPILE_COMMAND="make lock" "$(PIP_TOOLS)/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
	  --strip-extras --no-emit-index-url --no-emit-find-links --extra test $(LOCK_ARGS) \
	  --output-file requirements.lock pyproject.toml

mlflow-ui: venv
	.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# A team's server: PostgreSQL backend store + served artifacts in tracking/, on 127.0.0.1:5000 until Ctrl-C;
# then `export MLFLOW_TRACKING_URI=http://127.0.0.1:5000` where you train (see docs/ray_cluster.md).
tracking-server: venv
	$(PY) pipeline/tracking_server.py --root tracking --port 5000

# The shared environment (its build folder and the link to it, under the build lock) and this clone's .venv.
clean-venv:
	mkdir -p "$(VENV_HOME)" && flock "$(VENV_REAL).lock" sh -c 'rm -rf "$$(readlink -f "$$1")" "$$1"' _ "$(VENV_REAL)"
	rm -rf .venv
