import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from phi1.config import to_dict
from phi1.engines.training.track import RunLog
from tests.mlflow_server import mlflow_server
from tests.training_fixtures import pretrain_cfg


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_log_drops_rows_after_the_resumed_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    log.begin(None)
    for step in (2, 4, 6, 8):
        log.log("train", step, {"loss": 10 - step, "lr": 0.1, "mfu": None})
    log.log("val", 4, {"val_loss": 3.0})
    log.log("val", 8, {"val_loss": 2.0})
    # A run killed after step 8 resumes from its checkpoint at step 4.
    again = RunLog(tmp_path)
    again.begin(4)
    assert [r["step"] for r in _rows(tmp_path / "train.csv")] == ["2", "4"]
    assert _rows(tmp_path / "val.csv") == [{"step": "4", "val_loss": "3.0"}]
    again.log("train", 6, {"loss": 1.5})
    assert _rows(tmp_path / "train.csv")[-1]["loss"] == "1.5"
    # A fresh start empties them.
    RunLog(tmp_path).begin(None)
    assert _rows(tmp_path / "train.csv") == []


@pytest.mark.cluster  # a real MLflow server, stopped mid-run (make test-cluster)
def test_tracking_server_going_away_mid_run_does_not_stop_training(workdir, tokenized, mlflow_store):
    """A real `mlflow server`, killed while a pretraining run logs to it: one warning,
    training finishes, every metric is in the CSV logs and the model is exported."""
    with mlflow_server(mlflow_store, artifacts=workdir / "artifacts", log=workdir / "server.log") as server:
        url = server.url
        cfg = pretrain_cfg(max_steps=60, log_every=2, checkpoint_every=20, eval_every=20, log_model=True,
                           log_system_metrics=True)
        Path("params.yaml").write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
        # One retry instead of MLflow's ~4 minutes of them, so the failure shows within the run.
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "OMP_NUM_THREADS": "1"}
        started_ms = int(time.time() * 1000)
        proc = subprocess.Popen(
            [sys.executable, "-m", "phi1.cli", "pretrain", "-p", "params.yaml", "--tokens",
             str(tokenized / "data/tokens/pretrain"), "--tokenizer", str(tokenized / "tokenizer")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # Kill the server once it has stored some of the run's train metrics.
        remote = mlflow.MlflowClient(tracking_uri=url)
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            runs = remote.search_runs([remote.get_experiment_by_name("phi1-test").experiment_id],
                                      filter_string=f"tags.`phi1.stage` = 'pretrain' and attributes.start_time > {started_ms}")
            if runs and remote.get_metric_history(runs[0].info.run_id, "pretrain/loss"):
                break
            time.sleep(0.2)
        server.kill()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:] + (workdir / "server.log").read_text()[-3000:]
    assert err.count("warning: MLflow") == 1
    assert "training goes on without MLflow" in err
    assert [int(r["step"]) for r in _rows(Path("plots/pretrain/train.csv"))] == list(range(2, 61, 2))
    assert (Path("checkpoints/base") / "model.safetensors").is_file()
    # The server's store holds the run with the metrics sent before it went away.
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("phi1-test").experiment_id],
        filter_string=f"tags.`phi1.stage` = 'pretrain' and attributes.start_time > {started_ms}",
    )
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "pretrain/loss")]
    assert 1 <= len(steps) < 30 and steps == sorted(steps)
