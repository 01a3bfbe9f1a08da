"""pretrain, finetune, evaluate, validate, register and compare against a real `mlflow
server` over HTTP: runs, metrics, artifacts and the model registry (`pytest -m slow
tests/test_remote_tracking.py`; about 40 s).

The server keeps its sqlite store and its artifacts in a folder of its own; the stages
see only MLFLOW_TRACKING_URI=http://127.0.0.1:<port>, so anything that bypassed
phi1.tracking (a default sqlite file, a local mlruns/) would show up in the working
directory, and the asserts read everything back through the server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import EvaluateConfig, RegisterConfig, ValidateConfig, to_dict
from tests.conftest import REPO
from tests.mlflow_server import mlflow_server, unavailable_server
from tests.validate.test_stage import build_datasets
from tests.training_env import one_thread  # noqa: F401  (autouse here too)
from tests.training_fixtures import finetune_cfg, pretrain_cfg


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, f"phi1 {' '.join(args)}:\n{res.output}\n{res.exception!r}"
    return res.output


def _inputs_for_register(corpus: Path) -> None:
    """The register stage's other inputs in their real formats: a validation summary from
    a real `phi1 validate` run and a contamination report as `decontaminate` writes it
    (its run needs the benchmark embedder; the report is all that register reads)."""
    from phi1.validate.stage import run as validate

    datasets = build_datasets(Path("vdata"), corpus)
    assert validate(ValidateConfig(datasets=("filtered",), data_docs=False), {"filtered": datasets["filtered"]},
                    REPO / "expectations", Path("reports/validation"), Path("vdata/metrics/filter.json"))
    Path("reports/contamination.json").write_text(json.dumps({
        "tau": 0.9, "at_tau": {"removed": {"exercises": 0}, "tasks_similar": {"humaneval": 0}},
        "sweep": [{"tau": 0.95, "removed": {"exercises": 0}}, {"tau": 0.8, "removed": {"exercises": 1}}]}))


@pytest.mark.cluster  # a real MLflow server through a whole pipeline (make test-cluster)
def test_pipeline_tracks_and_registers_through_a_remote_server(workdir, tokenized, small_corpus, monkeypatch,
                                                               tmp_path_factory):
    server_dir = tmp_path_factory.mktemp("server")
    shutil.move(workdir / "mlflow.db", server_dir / "mlflow.db")  # the root fixture's migrated store
    monkeypatch.setenv("XDG_CACHE_HOME", str(server_dir / "client-cache"))
    # promote: try, so the stage itself gates v1 through to champion over HTTP
    register = RegisterConfig(gate_metrics={"eval.humaneval.pass_at_1": "higher"}, promote="try")
    params = {
        "pretrain": to_dict(pretrain_cfg(log_model=True)),  # register registers the models they log
        "finetune": to_dict(finetune_cfg(log_model=True)),
        "evaluate": to_dict(EvaluateConfig(benchmarks=("humaneval",), limit=2, max_new_tokens=16, workers=1)),
        "register": to_dict(register),
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", artifacts=server_dir / "artifacts",
                       log=server_dir / "server.log") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        _cli("pretrain", "-p", "params.yaml", "--tokens", str(tokenized / "data/tokens/pretrain"),
             "--tokenizer", str(tokenized / "tokenizer"))
        _cli("finetune", "-p", "params.yaml", "--tokens", str(tokenized / "data/tokens/finetune"))
        _cli("evaluate", "run", "-p", "params.yaml")
        _inputs_for_register(small_corpus)
        _cli("register", "-p", "params.yaml")
        models_table = _cli("compare", "--models", "-p", "params.yaml")

        client = mlflow.MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment_by_name("phi1-test")
        data = client.get_experiment_by_name("phi1-test-data")  # validate's and register's runs
        # Created by the server, so artifacts go through it (proxied), not to a client path.
        assert exp.artifact_location.startswith("mlflow-artifacts:/")
        assert data.artifact_location.startswith("mlflow-artifacts:/")
        every = client.search_runs([exp.experiment_id, data.experiment_id])
        runs = {r.data.tags["phi1.stage"]: r for r in every if "mlflow.parentRunId" not in r.data.tags}
        assert set(runs) == {"pretrain", "finetune", "evaluate", "validate", "register"}
        for stage, run in runs.items():
            assert run.info.status == "FINISHED", stage
            assert run.data.tags["git.commit"] and run.data.params, stage
        train_metrics = json.loads(Path("metrics/pretrain.json").read_text())
        pre = runs["pretrain"]
        assert [m.step for m in client.get_metric_history(pre.info.run_id, "pretrain/val_loss")] == [0, 4, 8, 12]
        assert pre.data.metrics["final.final_val_loss"] == pytest.approx(train_metrics["final_val_loss"])
        assert any(k.startswith("data.") and k.endswith("tokens/pretrain") for k in pre.data.tags)
        assert "plots/loss.png" in {a.path for a in client.list_artifacts(pre.info.run_id, "plots")}
        assert runs["finetune"].data.metrics["final.final_val_loss"] == pytest.approx(
            json.loads(Path("metrics/finetune.json").read_text())["final_val_loss"])
        evals = json.loads(Path("metrics/eval.json").read_text())
        assert runs["evaluate"].data.metrics["phi1.humaneval.pass_at_1"] == evals["phi1"]["humaneval"]["pass@1"]
        children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == runs["evaluate"].info.run_id]
        assert sorted(r.info.run_name for r in children) == ["base/humaneval", "phi1/humaneval"]
        for child in children:  # the MLflow evaluation's per-task table, uploaded through the server
            table = mlflow.load_table("eval_results_table.json", run_ids=[child.info.run_id])
            assert list(table["task_id"]) == ["HumanEval/0", "HumanEval/1"]

        # The registry: both models registered, phi1 v1 gated through to champion.
        v1 = client.get_model_version_by_alias("phi1", "champion")
        assert v1.version == "1" and client.get_model_version_by_alias("phi1", "challenger").version == "1"
        assert client.get_model_version_by_alias("phi1-base", "challenger").version == "1"
        assert float(v1.tags["eval.humaneval.pass_at_1"]) == evals["phi1"]["humaneval"]["pass@1"]
        assert v1.tags["validation.status"] == "passed"
        decision = json.loads(v1.tags["phi1.decision"])
        assert decision["accepted"] and decision["previous_champion"] is None
        registered = json.loads(Path("metrics/register.json").read_text())["phi1"]
        assert {k: registered[k] for k in ("version", "checkpoint", "registered", "promoted", "gates_failed")} == {
            "version": 1, "checkpoint": "checkpoints/phi1", "registered": 1, "promoted": 1, "gates_failed": 0}
        assert "champion" in models_table and "challenger" in models_table

        # The registered weights come back over HTTP, bit for bit.
        got = Path(mlflow.artifacts.download_artifacts("models:/phi1@champion", dst_path=str(workdir / "dl"),
                                                       tracking_uri=server.url))
        (weights,) = got.rglob("model.safetensors")
        ours = load_file("checkpoints/phi1/model.safetensors")
        theirs = load_file(weights)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    # Nothing bypassed the server: no local store, no local artifact root; the artifacts
    # are in the server's folder. The promotion lock is per server URI in the user cache.
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlruns").exists()
    assert list((server_dir / "artifacts").rglob("model.safetensors"))
    assert any(p.name.startswith("promote-") for p in (server_dir / "client-cache" / "phi1").iterdir())


# --------------------------------------------------------------------------- failures of the server

VALIDATE_FIXTURE = REPO / "tests/fixtures/validate"


def _validate_cmd() -> list[str]:
    """A real, cheap stage: `phi1 validate` of one fixture dataset, in its own process."""
    return [sys.executable, "-m", "phi1.cli", "validate", f"raw={VALIDATE_FIXTURE / 'raw'}", "-p", "params.yaml",
            "--expectations", str(REPO / "expectations"), "--out", "reports/validation",
            "--filter-metrics", str(VALIDATE_FIXTURE / "filter.json")]


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": url, "OMP_NUM_THREADS": "1"}


def _one_error_line(err: str, url: str) -> str:
    """The stage said one thing on stderr: a single `error:` line naming the server."""
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0], err[-3000:]
    return errors[0]


def _wait_for_the_work(proc: subprocess.Popen, client: mlflow.MlflowClient, server) -> str:
    """The id of the stage's run once it holds its config: stage_run is done, the work begins."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        exp = client.get_experiment_by_name("phi1-test-data")  # validate's runs go there
        for r in client.search_runs([exp.experiment_id]) if exp else []:
            if [a.path for a in client.list_artifacts(r.info.run_id, "config")] == ["config/validate.json"]:
                return r.info.run_id
        time.sleep(0.05)
    raise AssertionError(f"the stage opened no run:\n{server.log_tail()}")


@pytest.fixture
def server_dir(workdir, tmp_path_factory, monkeypatch) -> Path:
    """The server's own folder (its store: the root fixture's migrated one), and a client
    cache of our own, where the record of runs left open lives."""
    d = tmp_path_factory.mktemp("server")
    shutil.move(workdir / "mlflow.db", d / "mlflow.db")
    monkeypatch.setenv("XDG_CACHE_HOME", str(d / "client-cache"))
    Path("params.yaml").write_text(yaml.safe_dump({"validate": {"data_docs": False}}))
    return d


@pytest.mark.cluster  # a real MLflow server, killed mid-stage (make test-cluster)
def test_a_server_killed_mid_stage_fails_it_fast_and_the_next_stage_closes_its_run(server_dir):
    from phi1.tracking import pending_runs

    store = f"sqlite:///{server_dir / 'mlflow.db'}"
    start = dict(artifacts=server_dir / "artifacts", log=server_dir / "server.log")
    with mlflow_server(store, **start) as server:
        url, client = server.url, mlflow.MlflowClient(tracking_uri=server.url)
        proc = subprocess.Popen(_validate_cmd(), env=_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            run_id = _wait_for_the_work(proc, client, server)
            # Take the server away while the stage is held still, so it cannot have finished.
            proc.send_signal(signal.SIGSTOP)
            assert client.get_run(run_id).info.status == "RUNNING"
            server.kill()
            killed = time.monotonic()
            proc.send_signal(signal.SIGCONT)
            out, err = proc.communicate(timeout=120)
            took = time.monotonic() - killed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    print(f"stage failed {took:.1f} s after the server was killed: {err.strip().splitlines()[-1]}")
    assert proc.returncode == 2, err[-3000:]
    # the bound is MLflow's retries as params.yaml sets them (10 s timeout, 3 retries) plus the
    # rest of the stage's work, with room for a loaded machine; MLflow's defaults take ~4 minutes
    assert took < 60
    line = _one_error_line(err, url)
    assert run_id in line and "validate" in line
    # The work was done and stays: the report folder, whole.
    assert json.loads(Path("reports/validation/summary.json").read_text())["raw"]["success"] is True
    assert [e["run_id"] for e in pending_runs(url)] == [run_id]

    # The next stage, with the server still gone, fails at once without losing the record.
    t0 = time.monotonic()
    again = subprocess.run(_validate_cmd(), env=_env(url), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and time.monotonic() - t0 < 30
    assert "unreachable" in _one_error_line(again.stderr, url)
    assert [e["run_id"] for e in pending_runs(url)] == [run_id]

    # The server comes back at the same URI: the next stage ends the dangling run as FAILED.
    with mlflow_server(store, port=server.port, **start):
        back = subprocess.run(_validate_cmd(), env=_env(url), capture_output=True, text=True, timeout=300)
        assert back.returncode == 0, back.stderr[-3000:]
        lost = client.get_run(run_id)
        assert lost.info.status == "FAILED" and lost.info.end_time is not None
        assert url in lost.data.tags["phi1.tracking_failure"]
        runs = client.search_runs([lost.info.experiment_id], order_by=["attributes.start_time DESC"])
        assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    assert pending_runs(url) == []


@pytest.mark.slow
def test_a_server_that_answers_health_but_503_otherwise_fails_the_stage_within_the_bound(server_dir):
    with unavailable_server() as url:
        t0 = time.monotonic()
        res = subprocess.run(_validate_cmd(), env=_env(url), capture_output=True, text=True, timeout=120)
        took = time.monotonic() - t0
    print(f"stage failed after {took:.1f} s: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert took < 60
    assert "503" in _one_error_line(res.stderr, url)
    assert not Path("reports/validation").exists()  # it failed before its work: nothing half-written


@pytest.mark.slow
def test_a_hung_server_fails_the_stage_within_the_timeouts_of_params_yaml(server_dir):
    """A server that stops answering mid-stage (SIGSTOP: connections are accepted, nothing
    comes back) costs (retries + 1) x timeout + backoff + one short try to close the run;
    with MLflow's defaults it would be 8 x 120 s."""
    params = yaml.safe_load(Path("params.yaml").read_text())
    Path("params.yaml").write_text(yaml.safe_dump({**params, "tracking": {"http_timeout": 2, "http_retries": 1}}))
    with mlflow_server(f"sqlite:///{server_dir / 'mlflow.db'}", artifacts=server_dir / "artifacts",
                       log=server_dir / "server.log") as server:
        client = mlflow.MlflowClient(tracking_uri=server.url)
        proc = subprocess.Popen(_validate_cmd(), env=_env(server.url), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_the_work(proc, client, server)
            os.killpg(server.process.pid, signal.SIGSTOP)
            summary = Path("reports/validation/summary.json")
            deadline = time.monotonic() + 120
            while not summary.is_file() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            worked = time.monotonic()
            out, err = proc.communicate(timeout=120)
            took = time.monotonic() - worked
        finally:
            os.killpg(server.process.pid, signal.SIGCONT)  # so that it can be stopped
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    print(f"stage failed {took:.1f} s after its work: {err.strip().splitlines()[-1]}")
    assert proc.returncode == 2, err[-3000:]
    assert took < 2 * 2 + 1 + 2 + 10  # 2 tries of 2 s, backoff with jitter, the short try, slack (exit)
    assert "no answer within 2 s" in _one_error_line(err, server.url)
    assert summary.is_file()
