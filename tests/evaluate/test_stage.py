"""The `evaluate` stage end to end: two tiny checkpoints, both benchmarks, a real MLflow
sqlite store."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import ConfigError, EvaluateConfig, load_stage_config
from phi1.errors import Phi1Error
from phi1.evaluate import run
from tests.engines.conftest import build_tiny_model
from tests.no_namespaces import run_without_namespaces


@pytest.mark.slow
def test_stage_writes_metrics_outputs_and_one_mlflow_evaluation_per_checkpoint_and_benchmark(workdir, monkeypatch):
    import mlflow

    monkeypatch.delenv("PHI1_VARIANT", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "filtered-seed3")  # as in `phi1 ablate --seeds 3`

    build_tiny_model(workdir / "checkpoints" / "base", seed=1)
    build_tiny_model(workdir / "checkpoints" / "phi1", seed=2)
    (workdir / "params.yaml").write_text(
        "evaluate:\n  limit: 2\n  max_new_tokens: 8\n  batch_size: 2\n  workers: 2\n  solution_loss_limit: 5\n"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))  # a fresh calibration cache
    (workdir / "reports").mkdir()
    (workdir / "reports/contamination.json").write_text(json.dumps({  # HumanEval/1 and /4 are similar at 0.9
        "tau": 0.9, "sweep": [{"tau": 0.95, "tasks_similar": {"humaneval": 0, "mbpp": 0}},
                              {"tau": 0.9, "tasks_similar": {"humaneval": 2, "mbpp": 0}}],
        "benchmark_tasks": {"humaneval": 164, "mbpp": 500},
        "task_scores": {"humaneval": {"HumanEval/1": 0.92, "HumanEval/4": 0.9}}}))
    result = CliRunner().invoke(app, ["evaluate", "run", "-S", "evaluate.mbpp_split=validation"])
    assert result.exit_code == 0, result.output
    assert "humaneval: calibrated time limits of 2 tasks: max 3 CPU s (2 references measured now)" in result.stderr

    metrics = json.loads((workdir / "metrics" / "eval.json").read_text())
    assert set(metrics) == {"base", "phi1"}
    for name in ("base", "phi1"):
        assert set(metrics[name]) == {"humaneval", "mbpp"}
        for bm in ("humaneval", "mbpp"):
            m = metrics[name][bm]
            assert (m["pass@1"], m["n_tasks"]) == (0.0, 2)
            # Solution loss on its own task count (solution_loss_limit, not limit).
            assert m["solution_tasks"] == 5 and m["solution_tokens"] > 0 and 3 < m["solution_loss"] < 8
            per_task = [json.loads(line) for line in
                        (workdir / "reports" / "eval" / name / bm / "solution_loss.jsonl").read_text().splitlines()]
            assert len(per_task) == 5 and sum(r["tokens"] for r in per_task) == m["solution_tokens"]
            folder = workdir / "reports" / "eval" / name / bm
            samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
            results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
            assert len(samples) == len(results) == 2
            assert [r["task_id"] for r in results] == [s["task_id"] for s in samples]
            assert all("passed" in r and "result" in r for r in results)
            assert all(r["isolation"] == "namespaces" for r in results)
            summary = json.loads((folder / "summary.json").read_text())
            assert summary["benchmark"] == bm and summary["n_samples"] == 2
            assert summary["prompts_truncated"] == summary["max_new_tokens_capped"] == 0  # all fit the context
            assert summary["isolation"] == "namespaces"
            # Calibrated time limits: only the params in the DVC outputs, never the
            # machine-dependent seconds, machine or cache (those go to MLflow and stderr).
            assert summary["time_limits"] == {"mode": "calibrated", "floor": 3.0, "factor": 4.0, "wall_factor": 5.0}
            for out in (folder / "summary.json", folder / "results.jsonl"):
                assert "timeouts-" not in out.read_text() and "cpu_limit" not in out.read_text()
    assert [s["task_id"] for s in map(json.loads, (workdir / "reports/eval/base/mbpp/samples.jsonl").open())] == [
        "Mbpp/511", "Mbpp/512"]

    # Table 3: among the 2 evaluated tasks (HumanEval/0, /1) and the 5 loss-scored ones.
    t3 = json.loads((workdir / "reports/eval/table3.json").read_text())
    assert t3["taus"] == [0.95, 0.9] and t3["limit"] == 2 and t3["solution_loss_limit"] == 5
    assert t3["skipped"] == {"mbpp": "the contamination report scored the MBPP test split, not validation"}
    rows = {(r["checkpoint"], r["tau"], r["subset"]): r for r in t3["rows"]}
    assert len(rows) == 2 * 2 * 2 and {r["benchmark"] for r in t3["rows"]} == {"humaneval"}
    for name in ("base", "phi1"):
        sim, rest = rows[(name, 0.9, "similar")], rows[(name, 0.9, "not_similar")]
        assert (sim["n_tasks"], sim["task_ids"], sim["solution_tasks"]) == (1, ["HumanEval/1"], 2)
        assert (rest["n_tasks"], rest["solution_tasks"], rest["pass@1"]) == (1, 3, 0.0)
        assert (rows[(name, 0.95, "similar")]["n_tasks"], rows[(name, 0.95, "similar")]["pass@1"]) == (0, None)
        per_task = {r["task_id"]: r for r in map(json.loads, (workdir / f"reports/eval/{name}/humaneval/solution_loss.jsonl").open())}
        mine = [per_task["HumanEval/1"], per_task["HumanEval/4"]]
        assert sim["solution_loss"] == pytest.approx(sum(r["loss"] * r["tokens"] for r in mine) / sum(r["tokens"] for r in mine))

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("phi1-test")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parent = [r for r in runs if r.info.run_name == "evaluate"]
    children = [r for r in runs if "phi1.checkpoint" in r.data.tags]
    assert len(parent) == 1 and parent[0].data.params["limit"] == "2"
    assert sorted(r.info.run_name for r in children) == ["base/humaneval", "base/mbpp", "phi1/humaneval", "phi1/mbpp"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        # nested runs carry the variant too, so a search by variant finds them
        assert (child.data.tags["phi1.variant"], child.data.tags["phi1.seed"]) == ("filtered", "3")
        assert child.data.metrics["pass_at_1"] == 0.0
        if child.info.run_name.endswith("humaneval"):  # Table 3 in the evaluation
            assert child.data.metrics["table3.tau_0.90.similar.n_tasks"] == 1.0
            assert child.data.metrics["table3.tau_0.90.similar.solution_tasks"] == 2.0
        assert child.data.params["sandbox.isolation"] == "namespaces"
        assert child.data.metrics["pass_at_1/mean"] == 0.0  # the MLflow evaluation's own metric
        ckpt, bm = child.data.tags["phi1.checkpoint"], child.data.tags["phi1.benchmark"]
        for key in ("solution_loss", "solution_tokens", "solution_loss_task_mean"):
            assert child.data.metrics[key] == pytest.approx(metrics[ckpt][bm][key])
            assert parent[0].data.metrics[f"{ckpt}.{bm}.{key}"] == pytest.approx(metrics[ckpt][bm][key])
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(child.info.run_id)}
        assert {"eval_results_table.json", "summary.json", "results.jsonl", "solution_loss.jsonl",
                "time_limits.json"} <= artifacts
        params = child.data.params
        assert (params["time_limits.mode"], params["time_limits.floor"], params["time_limits.factor"]) == (
            "calibrated", "3.0", "4.0")
        machine = params["time_limits.machine"]
        assert params["time_limits.cache"] == str(workdir / "cache" / "phi1" / f"timeouts-{machine}.json")
        assert child.data.metrics["time_limit_cpu_max"] == 3.0 and child.data.metrics["reference_cpu_total"] > 0
        limits = mlflow.artifacts.load_dict(f"{child.info.artifact_uri}/time_limits.json")
        assert len(limits["tasks"]) == 2 and all(t["cpu_limit"] == 3.0 and t["reference_cpu"] > 0
                                                 for t in limits["tasks"].values())
        table = mlflow.load_table("eval_results_table.json", run_ids=[child.info.run_id])
        assert list(table["task_id"]) == ([f"HumanEval/{i}" for i in (0, 1)] if child.data.tags["phi1.benchmark"] == "humaneval"
                                          else ["Mbpp/511", "Mbpp/512"])
        assert {"prompt", "outputs", "result", "n_samples", "n_passed", "cpu_limit",
                "pass_at_1/score"} <= set(table.columns)
    assert parent[0].data.metrics["base.humaneval.pass_at_1"] == 0.0


def _mlflow_runs(workdir) -> list:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("phi1-test")
    return [] if exp is None else mlflow.search_runs([exp.experiment_id], output_format="list")


def test_without_namespaces_the_stage_runs_nothing_and_writes_nothing(workdir):
    """A machine that allows no namespaces (a real one: its namespace limits are 0)."""
    build_tiny_model(workdir / "checkpoints" / "base")
    (workdir / "params.yaml").write_text("evaluate:\n  checkpoints: [checkpoints/base]\n  limit: 1\n")
    proc = run_without_namespaces([sys.executable, "-m", "phi1.cli", "evaluate", "run"], capture_output=True,
                                  text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: sandbox: namespace isolation unavailable: [Errno ")
    assert proc.stderr.count("\n") == 1 and "--unsafe-guard (or set evaluate.unsafe_guard: true)" in proc.stderr
    assert not (workdir / "reports").exists() and not (workdir / "metrics").exists()
    assert _mlflow_runs(workdir) == []


@pytest.mark.slow
def test_without_namespaces_unsafe_guard_runs_and_records_the_guard(workdir):
    build_tiny_model(workdir / "checkpoints" / "base")
    (workdir / "params.yaml").write_text(
        "evaluate:\n  checkpoints: [checkpoints/base]\n  benchmarks: [humaneval]\n  limit: 2\n"
        "  max_new_tokens: 4\n  workers: 1\n  solution_loss: false\n")
    proc = run_without_namespaces([sys.executable, "-m", "phi1.cli", "evaluate", "run", "--unsafe-guard"],
                                  capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder = workdir / "reports/eval/base/humaneval"
    assert json.loads((folder / "summary.json").read_text())["isolation"] == "guard"
    assert [json.loads(line)["isolation"] for line in (folder / "results.jsonl").read_text().splitlines()] == [
        "guard", "guard"]
    runs = _mlflow_runs(workdir)
    parent = [r for r in runs if r.info.run_name == "evaluate"]
    child = [r for r in runs if "phi1.checkpoint" in r.data.tags]
    assert len(parent) == len(child) == 1
    assert parent[0].data.params["unsafe_guard"] == "true" and parent[0].data.tags["phi1.sandbox"] == "guard"
    assert child[0].data.params["sandbox.isolation"] == "guard"


def test_solution_loss_off_leaves_only_pass_at_k(workdir):
    build_tiny_model(workdir / "checkpoints" / "base")
    cfg = EvaluateConfig(checkpoints=("checkpoints/base",), benchmarks=("humaneval",), limit=1, max_new_tokens=4,
                         workers=1, solution_loss=False)
    metrics = run(cfg, out=workdir / "reports/eval", metrics_path=workdir / "metrics/eval.json",
        contamination_path=None)
    assert metrics == {"base": {"humaneval": {"pass@1": 0.0, "n_tasks": 1}}}
    fixed = EvaluateConfig(**{**cfg.__dict__, "timeout": 5.0})  # the override: no calibration
    run(fixed, out=workdir / "reports/eval", metrics_path=workdir / "metrics/eval.json",
        contamination_path=None)
    summary = json.loads((workdir / "reports/eval/base/humaneval/summary.json").read_text())
    assert summary["time_limits"] == {"mode": "fixed", "timeout": 5.0}
    assert not (workdir / "reports/eval/base/humaneval/solution_loss.jsonl").exists()


def test_a_missing_checkpoint_is_an_error_and_writes_nothing(workdir):
    cfg = EvaluateConfig(checkpoints=("checkpoints/nope",), limit=1)
    with pytest.raises(Phi1Error, match="checkpoints/nope is not a Hugging Face model folder"):
        run(cfg, out=workdir / "reports/eval", metrics_path=workdir / "metrics/eval.json",
        contamination_path=None)
    assert not (workdir / "reports").exists() and not (workdir / "metrics").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("evaluate.n_samples=4", "n_samples > 1 needs temperature > 0"),
        ("evaluate.k=[1,10]", "each k must be in 1..n_samples (1)"),
        ("evaluate.benchmarks=[apps]", "evaluate.benchmarks[0]"),
        ("evaluate.checkpoints=[a/phi1,b/phi1]", "folder names must be unique"),
        ("evaluate.limit=0", "evaluate.limit must be positive or null"),
        ("evaluate.top_p=0", "top_p in (0, 1]"),
        ("evaluate.solution_loss_limit=0", "evaluate.solution_loss_limit must be positive or null"),
        ("evaluate.timeout=0", "evaluate: timeout (or null: calibrate) and memory_bytes must be positive"),
        ("evaluate.timeout_floor=0", "timeout_floor and timeout_factor must be positive"),
        ("evaluate.timeout_factor=-1", "timeout_floor and timeout_factor must be positive"),
    ],
)
def test_bad_evaluate_params(tmp_path, override, message):
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {}\n")
    with pytest.raises(ConfigError) as info:
        load_stage_config("evaluate", params, [override])
    assert message in str(info.value)


def test_sampling_params_build():
    cfg = EvaluateConfig(n_samples=10, temperature=0.8, k=(1, 10))
    assert cfg.k == (1, 10) and cfg.n_samples == 10
