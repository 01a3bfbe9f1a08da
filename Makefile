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

.PHONY: install sysdeps sysdeps-cluster demo test test-cluster ui

# sysdeps: the Debian packages the GUI probes (Xvfb) and the MLflow UI browser test (Chromium) need.

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

sysdeps:
	@missing=""; command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install sysdeps
	$(BIN)/dvc repro
	$(BIN)/phi1 summary
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: install sysdeps
	$(BIN)/python -m pytest -q -m 'not cluster'

# sysdeps-cluster: the Debian packages of the real services the cluster tests start
# (filled in per service below: Slurm + munge, PostgreSQL).
sysdeps-cluster:
	@missing=""; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# test-cluster: the tests that start real services (Slurm, PostgreSQL, an S3 endpoint,
# a simulated CI runner); `.ci/run` runs them after `make test`.
test-cluster: install sysdeps sysdeps-cluster
	$(BIN)/python -m pytest -q -m cluster

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000
