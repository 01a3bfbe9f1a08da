"""What every training test runs under: one torch thread and the session's MLflow store.
Each training test folder's conftest imports these two fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core box two threads contend and run ~30x slower,
    and the resume test compares runs that must use the same thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_store) -> Path:
    """A temp working directory using the session's MLflow store (overrides the root fixture)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("PHI1_EXPERIMENT", "phi1-test")
    return tmp_path
