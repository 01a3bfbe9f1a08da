"""The `probe` stage end to end: two tiny checkpoints, real Xvfb, a real MLflow store."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import ProbeConfig
from phi1.errors import Phi1Error
from phi1.probe import run
from phi1.probe.suite import load_suite
from tests.engines.conftest import build_tiny_model
from tests.no_namespaces import run_without_namespaces
from tests.training_env import one_thread  # noqa: F401  (autouse: one torch thread)


@pytest.mark.gui
@pytest.mark.slow
def test_stage_writes_metrics_and_one_mlflow_evaluation_per_checkpoint(workdir, monkeypatch):
    import mlflow

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("PHI1_VARIANT", "mine")

    build_tiny_model(workdir / "checkpoints" / "base", seed=1)
    build_tiny_model(workdir / "checkpoints" / "phi1", seed=2)
    (workdir / "params.yaml").write_text(
        "probe:\n  libraries: [pygame, tkinter]\n  max_new_tokens: 8\n  batch_size: 8\n  workers: 2\n")
    result = CliRunner().invoke(app, ["probe", "run"])
    assert result.exit_code == 0, result.output

    n = len(load_suite(libraries=("pygame", "tkinter")))
    metrics = json.loads((workdir / "metrics" / "probe.json").read_text())
    assert set(metrics) == {"base", "phi1", "emergence"}
    em = metrics.pop("emergence")
    assert (em["base"], em["finetuned"]) == ("base", "phi1")
    delta = em["solution_loss_delta"]  # phi1 minus base, paired by probe, with its t interval
    assert delta["n"] == n and delta["ci95"]["low"] <= delta["mean"] <= delta["ci95"]["high"]
    assert delta["mean"] == pytest.approx(metrics["phi1"]["solution_loss"] - metrics["base"]["solution_loss"])
    assert set(em["by_library"]) == {"pygame", "tkinter"}
    for name, m in metrics.items():
        assert {"pass_rate", "api_validity", "by_library", "solution_loss", "api_topk"} <= set(m)
        assert m["solution_loss"] > 0 and 0 <= m["api_topk"] <= 1 and m["api_names"] > 0
        assert all(m["by_library"][lib]["solution_loss"] > 0 for lib in ("pygame", "tkinter"))
        assert m["pass_rate"] == 0.0  # a random 2-layer model writes no working program
        assert set(m["by_library"]) == {"pygame", "tkinter"}
        rows = [json.loads(x) for x in (workdir / "reports/probe" / name / "results.jsonl").read_text().splitlines()]
        assert len(rows) == n and all("parses" in r and "api_chains" in r for r in rows)
        assert sum(r["solution_nats_per_char"] for r in rows) / n == pytest.approx(m["solution_loss"])
        assert all(r["isolation"] == "namespaces" for r in rows)
        summary = json.loads((workdir / "reports/probe" / name / "summary.json").read_text())
        assert summary["isolation"] == "namespaces"
        assert summary["prompts_truncated"] == summary["max_new_tokens_capped"] == 0  # all fit the context

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("phi1-test")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parent = [r for r in runs if r.info.run_name == "probe"]
    children = [r for r in runs if r.data.tags.get("phi1.stage") == "probe" and "phi1.checkpoint" in r.data.tags]
    assert len(parent) == 1
    assert parent[0].data.metrics["emergence.solution_loss_delta.mean"] == pytest.approx(delta["mean"])
    assert parent[0].data.metrics["emergence.solution_loss_delta.ci95.low"] == pytest.approx(delta["ci95"]["low"])
    assert sorted(r.info.run_name for r in children) == ["base/probe", "phi1/probe"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        assert child.data.tags["phi1.variant"] == "mine" and "phi1.seed" not in child.data.tags
        assert child.data.metrics["pass_rate"] == 0.0
        assert child.data.params["sandbox.isolation"] == "namespaces"
        assert child.data.metrics["probe_pass/mean"] == 0.0  # the MLflow evaluation's own metric
        assert "tkinter.pass_rate" in child.data.metrics
        ckpt = child.data.tags["phi1.checkpoint"]
        assert child.data.metrics["solution_loss"] == pytest.approx(metrics[ckpt]["solution_loss"])
        assert child.data.metrics["probe_solution_loss/mean"] == pytest.approx(metrics[ckpt]["solution_loss"])
        assert child.data.metrics["tkinter.api_topk"] == pytest.approx(metrics[ckpt]["by_library"]["tkinter"]["api_topk"])
        table = mlflow.load_table("eval_results_table.json", run_ids=[child.info.run_id])
        assert len(table) == n and {"probe_id", "library", "prompt", "outputs", "passed", "runs",
                                    "api_invalid", "solution_nats_per_char", "api_topk_hits"} <= set(table.columns)


@pytest.mark.gui
def test_without_namespaces_the_stage_runs_nothing_and_writes_nothing(workdir):
    """A machine that allows no namespaces (a real one: its namespace limits are 0)."""
    import mlflow

    build_tiny_model(workdir / "checkpoints" / "base")
    (workdir / "params.yaml").write_text("probe:\n  checkpoints: [checkpoints/base]\n  libraries: [tkinter]\n")
    proc = run_without_namespaces([sys.executable, "-m", "phi1.cli", "probe", "run"], capture_output=True,
                                  text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: sandbox: namespace isolation unavailable: [Errno ")
    assert proc.stderr.count("\n") == 1 and "--unsafe-guard (or set probe.unsafe_guard: true)" in proc.stderr
    assert not (workdir / "reports").exists() and not (workdir / "metrics").exists()
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("phi1-test")
    assert exp is None or mlflow.search_runs([exp.experiment_id], output_format="list") == []


def test_a_missing_checkpoint_is_an_error_and_writes_nothing(workdir):
    cfg = ProbeConfig(checkpoints=("checkpoints/nope",))
    with pytest.raises(Phi1Error, match="checkpoints/nope is not a Hugging Face model folder"):
        run(cfg, out=workdir / "reports/probe", metrics_path=workdir / "metrics/probe.json")
    assert not (workdir / "reports").exists() and not (workdir / "metrics").exists()
