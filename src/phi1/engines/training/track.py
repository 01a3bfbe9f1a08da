"""Metrics of a training run: always in local CSV files, in MLflow while it answers.

    log = RunLog(state_dir, mlflow_enabled=True)
    log.log("train", step, {"loss": 2.3, "lr": 1e-3})   # never blocks on the network
    log.call("log artifact", mlflow.log_artifact, "plots/pretrain/loss.png")
    log.close()

A long run must not die because the tracking server went away (issue 5): MLflow calls
happen on a background thread; the first failure prints one warning, MLflow logging
stops for the rest of the run and training goes on, with every metric still in
`<series>.csv` (which `dvc plots` reads). After such a failure the MLflow HTTP client is
told not to retry (its default retries for about 4 minutes per call), so the remaining
end-of-run calls fail fast instead of stalling the stage.

The CSV files live in the run's state folder so a resumed run appends to them; rows past
the step a run resumes from (written by the killed run after its last checkpoint) are
dropped first.
"""

from __future__ import annotations

import csv
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

SERIES_COLUMNS = {
    "train": ["step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_mb", "tokens"],
    "val": ["step", "val_loss"],
}


class RunLog:
    def __init__(self, folder: str | Path, run_id: str | None = None, enabled: bool = True,
                 headline: str | None = None):
        """`run_id`: the MLflow run to log to (None: CSV only). `enabled=False` (non-main
        processes) makes every method a no-op. `headline`: the stage whose loss curve this
        is; its `phi1.tracking.HEADLINE_SERIES` go to MLflow as `<stage>/loss`, the first
        chart of the run in the MLflow UI (`phi1.tracking.headline_key`)."""
        self.folder = Path(folder)
        self.headline = headline
        self.enabled = enabled
        self.run_id = run_id
        self.mlflow_alive = run_id is not None and enabled
        self._warned = False
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        if self.mlflow_alive:
            self._thread = threading.Thread(target=self._worker, name="phi1-mlflow", daemon=True)
            self._thread.start()

    def begin(self, resume_step: int | None) -> None:
        """Start the CSV files afresh, or keep their rows up to `resume_step` when resuming."""
        if not self.enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for series, cols in SERIES_COLUMNS.items():
            path = self.csv_path(series)
            rows = []
            if resume_step is not None and path.is_file():
                with open(path, newline="") as fh:
                    rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            with open(path, "w", newline="") as fh:
                w = csv.DictWriter(fh, cols)
                w.writeheader()
                w.writerows(rows)

    def csv_path(self, series: str) -> Path:
        return self.folder / f"{series}.csv"

    def log(self, series: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        cols = SERIES_COLUMNS[series]
        row = {"step": step, **{k: v for k, v in values.items() if k in cols}}
        with open(self.csv_path(series), "a", newline="") as fh:
            csv.DictWriter(fh, cols).writerow(row)
        if self.mlflow_alive:
            from phi1.tracking import HEADLINE_SERIES, headline_key

            metrics = {headline_key(self.headline, k) if self.headline and k in HEADLINE_SERIES else k: float(v)
                       for k, v in values.items() if v is not None}
            self._queue.put((metrics, step, int(time.time() * 1000)))

    def _worker(self) -> None:
        # The fluent API's active run is thread-local: log to the run by id instead.
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        client = MlflowClient()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if not self.mlflow_alive:
                continue
            metrics, step, ts = item
            try:
                client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])
            except Exception as exc:  # any failure of the store: keep training
                self._fail("log metrics", exc)

    def call(self, what: str, fn: Callable, *args, **kwargs) -> Any:
        """A synchronous MLflow call (artifacts, the model); skipped once MLflow has failed."""
        if not (self.enabled and self.mlflow_alive):
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self._fail(what, exc)
            return None

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (waiting at most `timeout` seconds), stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._fail("log metrics", TimeoutError(f"MLflow did not answer within {timeout:.0f} s"))
        self._thread = None

    def _fail(self, what: str, exc: BaseException) -> None:
        self.mlflow_alive = False
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
        if not self._warned:
            self._warned = True
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(
                f"warning: MLflow {what} failed ({msg[:300]}); training goes on without MLflow, "
                f"metrics are kept in {self.folder}/*.csv",
                file=sys.stderr, flush=True,
            )
