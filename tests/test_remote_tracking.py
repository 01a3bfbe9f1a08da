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
import shutil
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
from tests.mlflow_server import mlflow_server
from tests.test_validate import build_datasets
from tests.train.conftest import finetune_cfg, mlflow_store, one_thread, pretrain_cfg, tokenized  # noqa: F401


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, f"phi1 {' '.join(args)}:\n{res.output}\n{res.exception!r}"
    return res.output


def _inputs_for_register(corpus: Path) -> None:
    """The register stage's other inputs in their real formats: a validation summary from
    a real `phi1 validate` run and a contamination report as `decontaminate` writes it
    (its run needs the benchmark embedder; the report is all that register reads)."""
    from phi1.validate import run as validate

    datasets = build_datasets(Path("vdata"), corpus)
    assert validate(ValidateConfig(datasets=("filtered",), data_docs=False), {"filtered": datasets["filtered"]},
                    REPO / "expectations", Path("reports/validation"), Path("vdata/metrics/filter.json"))
    Path("reports/contamination.json").write_text(json.dumps({
        "tau": 0.9, "at_tau": {"removed": {"exercises": 0}, "tasks_similar": {"humaneval": 0}},
        "sweep": [{"tau": 0.95, "removed": {"exercises": 0}}, {"tau": 0.8, "removed": {"exercises": 1}}]}))


@pytest.mark.slow
def test_pipeline_tracks_and_registers_through_a_remote_server(workdir, tokenized, small_corpus, monkeypatch,
                                                               tmp_path_factory):
    server_dir = tmp_path_factory.mktemp("server")
    shutil.move(workdir / "mlflow.db", server_dir / "mlflow.db")  # the root fixture's migrated store
    monkeypatch.setenv("XDG_CACHE_HOME", str(server_dir / "client-cache"))
    register = RegisterConfig(gate_metrics=("eval.humaneval.pass_at_1",))
    params = {
        "pretrain": to_dict(pretrain_cfg()),
        "finetune": to_dict(finetune_cfg()),
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
        # Created by the server, so artifacts go through it (proxied), not to a client path.
        assert exp.artifact_location.startswith("mlflow-artifacts:/")
        every = client.search_runs([exp.experiment_id])
        runs = {r.data.tags["phi1.stage"]: r for r in every if "mlflow.parentRunId" not in r.data.tags}
        assert set(runs) == {"pretrain", "finetune", "evaluate", "validate", "register"}
        for stage, run in runs.items():
            assert run.info.status == "FINISHED", stage
            assert run.data.tags["git.commit"] and run.data.params, stage
        train_metrics = json.loads(Path("metrics/pretrain.json").read_text())
        pre = runs["pretrain"]
        assert [m.step for m in client.get_metric_history(pre.info.run_id, "val_loss")] == [0, 4, 8, 12]
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
        assert json.loads(Path("metrics/register.json").read_text())["phi1"] == {
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
    assert [p.name for p in (server_dir / "client-cache" / "phi1").iterdir()][0].startswith("promote-")
