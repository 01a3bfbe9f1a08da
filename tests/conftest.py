"""Tiny real fixtures shared by the tests: a temp MLflow sqlite store, a working
directory, a small corpus of real standard-library files."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

pytest_plugins = ["tests.training_fixtures"]  # session-wide training data, shared across folders

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

REPO = Path(__file__).resolve().parents[1]

# Twenty real files of the running interpreter's standard library, of varied style.
CORPUS_FILES = [
    "bisect.py", "heapq.py", "colorsys.py", "textwrap.py", "shlex.py", "fnmatch.py",
    "glob.py", "keyword.py", "string.py", "queue.py", "sched.py", "graphlib.py",
    "json/decoder.py", "json/encoder.py", "json/scanner.py", "email/quoprimime.py",
    "statistics.py", "fractions.py", "this.py", "stringprep.py",
]


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow sqlite store. Creating one runs MLflow's schema
    migrations (seconds), so each test copies this file instead."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def workdir(tmp_path, monkeypatch, _mlflow_template) -> Path:
    """A temp working directory with its own MLflow sqlite store (artifacts in mlruns/)."""
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(_mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PHI1_EXPERIMENT", "phi1-test")
    return tmp_path


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """A folder of 20 real standard-library files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest = tmp_path / "corpus"
    for rel in CORPUS_FILES:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stdlib / rel, target)
    return dest
