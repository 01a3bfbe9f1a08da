"""The `evaluate` stage: generate, execute and score every checkpoint on every benchmark.

    phi1 evaluate run --out reports/eval --metrics metrics/eval.json   # params: `evaluate`
    dvc repro evaluate

For each checkpoint x benchmark: completions (generate.py), verdicts in the sandbox
(execute.py), pass@k. Writes `<out>/<checkpoint>/<benchmark>/{samples,results}.jsonl`
and `summary.json`, and `metrics/eval.json` = {checkpoint: {benchmark: {"pass@1": ..}}}
for `dvc metrics`. Unless `solution_loss: false`, each checkpoint x benchmark also gets
its solution loss (solution_loss.py) on every task (`solution_loss_limit`, not `limit`):
`solution_loss`, `solution_tokens` and friends beside pass@k, and per task in
`<out>/<checkpoint>/<benchmark>/solution_loss.jsonl`. In MLflow the stage run holds
one nested run per checkpoint x benchmark, each an MLflow evaluation
(`mlflow.models.evaluate` with a pass@k metric per k and the per-task table as its
`eval_results_table` artifact, plus the solution-loss metrics), tagged
`phi1.checkpoint` and `phi1.benchmark`: select them in the UI to compare checkpoints
side by side; each carries the param `sandbox.isolation` (namespaces, or guard where
`unsafe_guard` allowed it), as does every results row and summary.json (`isolation`).
Time limits (timeouts.py): calibrated per task from the references' CPU time on this
machine (cached per machine; `timeout` overrides them); summary.json records only how
(`time_limits`: mode, floor, factor), the limits themselves go to each evaluation
(params `time_limits.*`, the artifact `time_limits.json`, the table's `cpu_limit`).
Table 3 of phi-1 (table3.py): at each tau of the decontamination sweep, pass@k and
solution loss of each checkpoint on the tasks similar and not similar to the training
data (per `contamination`, the decontaminate report: some detector scored a training
item >= tau against the task), with the task counts, among the tasks evaluated (`limit`
for pass@k, `solution_loss_limit` for the loss): `<out>/table3.json`, and per
evaluation the metrics `table3.tau_<tau>.<similar|not_similar>.<metric>` and the
artifact `table3.json`. HumanEval, and MBPP when `mbpp_split` is test (the split the
report scored). Without a report (outside DVC) there is no Table 3, and a line says so.
Nothing is written under `out` or to the metrics file unless every evaluation finished,
and nothing runs where the sandbox has no namespaces and `unsafe_guard` is false.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from phi1.config import EvaluateConfig
from phi1.engines import benchmarks
from phi1.errors import Phi1Error
from phi1.evaluate import table3
from phi1.evaluate.execute import Scored, score, write_results
from phi1.evaluate.timeouts import TimeLimits, resolve
from phi1.engines.progress import progress_bar
from phi1.engines.sandbox import open_sandbox
from phi1.engines.generation import check_model_dir, generate, load_model, write_samples
from phi1.engines.passk import pass_at_k
from phi1.engines.solution_loss import SolutionLoss, solution_loss
from phi1.io import atomic_dir, write_json


def run(cfg: EvaluateConfig, out: str | Path, metrics_path: str | Path,
        contamination_path: Optional[str | Path]) -> dict:
    """Run the stage; returns what it writes to `metrics_path`. `contamination_path`: the
    decontaminate report Table 3 splits the tasks by (None or missing: no Table 3)."""
    import mlflow

    from phi1.tracking import metric_key, stage_run

    for ckpt in cfg.checkpoints:
        check_model_dir(ckpt, "evaluate.checkpoints")
    t3: list[dict] = []
    skipped: dict[str, str] = {}
    metrics: dict[str, dict] = {}
    limits: dict[str, TimeLimits] = {}  # per benchmark, shared by the checkpoints
    # The sandbox first: where it refuses to run (no namespaces, no unsafe_guard), nothing is written.
    with open_sandbox(cfg.workers, unsafe_guard=cfg.unsafe_guard, param="evaluate.unsafe_guard") as box, \
            atomic_dir(out, cfg.checkpoints) as tmp, \
            stage_run("evaluate", cfg, inputs=list(cfg.checkpoints) + _existing(contamination_path),
                      tags={"phi1.sandbox": box.isolation}):
        sim = _similarity(contamination_path)  # before the slow part: a bad report fails now
        for ckpt in cfg.checkpoints:
            lm = load_model(ckpt)
            name = lm.name
            for bm in cfg.benchmarks:
                tasks = benchmarks.load(bm, cfg.mbpp_split, cfg.limit)
                with progress_bar(len(tasks) * cfg.n_samples, f"{name} {bm}: generate") as update:
                    samples = generate(
                        lm, tasks, n_samples=cfg.n_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
                        progress=update,
                    )
                fit = lm.fit.take()  # prompts cut / max_new_tokens lowered to fit the context
                if bm not in limits:
                    limits[bm] = _time_limits(box, bm, tasks, cfg)
                with progress_bar(len(samples), f"{name} {bm}: execute") as update:
                    scored = score(
                        [{**s, "_task": s["task_id"]} for s in samples], tasks, cfg.k, benchmark=bm,
                        sandbox=box, limits=limits[bm], memory_bytes=cfg.memory_bytes, progress=update,
                    )
                folder = tmp / name / bm
                write_samples(folder / "samples.jsonl", samples)
                write_results(folder / "results.jsonl", scored.rows)
                write_json(folder / "summary.json", {"checkpoint": str(ckpt), **scored.summary, **fit})
                passk = {k: v for k, v in scored.summary.items() if k.startswith("pass@")}
                metrics.setdefault(name, {})[bm] = {**passk, "n_tasks": scored.summary["n_tasks"]}
                loss = _solution_loss(lm, bm, cfg) if cfg.solution_loss else None
                if loss is not None:
                    metrics[name][bm].update(loss.metrics())
                    write_samples(folder / "solution_loss.jsonl", loss.per_task)  # any rows as JSONL
                rows = None
                if sim is not None and (why := table3.covers(sim, bm, cfg.mbpp_split)) is None:
                    rows = table3.subset_rows(sim, bm, scored.per_task, loss.per_task if loss else None, cfg.k)
                    t3.extend({"checkpoint": name, "benchmark": bm, **r} for r in rows)
                elif sim is not None:
                    skipped[bm] = why
                _log_evaluation(mlflow, name, str(ckpt), bm, tasks, scored, cfg.k, loss, rows)
                mlflow.log_metrics({f"{name}.{bm}.{metric_key(k)}": v for k, v in {**passk, **fit}.items()})
                if loss is not None:
                    mlflow.log_metrics({f"{name}.{bm}.{k}": v for k, v in loss.metrics().items()})
        if sim is not None:
            write_json(tmp / "table3.json", {
                "source": str(contamination_path), "rule": table3.RULE, "taus": list(sim.taus),
                "limit": cfg.limit, "solution_loss_limit": cfg.solution_loss_limit if cfg.solution_loss else None,
                "note": "subsets among the tasks evaluated: pass@k over n_tasks (evaluate.limit), solution "
                        "loss over solution_tasks (solution_loss_limit); tasks_similar_total counts the "
                        "whole benchmark",
                "skipped": skipped, "rows": t3})
        write_json(metrics_path, metrics)
    return metrics


def _existing(path: Optional[str | Path]) -> list[str | Path]:
    return [path] if path is not None and Path(path).is_file() else []


def _similarity(path: Optional[str | Path]) -> Optional[table3.Similarity]:
    """The contamination report's per-task similarity, or None (a line on stderr) when
    there is no report: then no Table 3."""
    import sys

    if path is None or not Path(path).is_file():
        print(f"evaluate: no contamination report {path}: Table 3 (similar / not similar tasks) not written",
              file=sys.stderr, flush=True)
        return None
    try:
        report = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise Phi1Error(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    return table3.similarity(report, path)


def _solution_loss(lm, bm: str, cfg: EvaluateConfig) -> SolutionLoss:
    """Solution loss on every task of the benchmark (`solution_loss_limit`, not `limit`)."""
    tasks = benchmarks.load(bm, cfg.mbpp_split, cfg.solution_loss_limit)
    with progress_bar(len(tasks), f"{lm.name} {bm}: solution loss") as update:
        return solution_loss(lm, tasks, batch_size=cfg.batch_size, progress=update)


def _time_limits(box, bm: str, tasks, cfg: EvaluateConfig) -> TimeLimits:
    """The benchmark's time limits (calibrated unless `timeout` is set); a line on stderr
    says how they were set (they vary per machine: never in the DVC outputs)."""
    import sys

    got = resolve(tasks, box, cfg.timeout, cfg.timeout_floor, cfg.timeout_factor, memory_bytes=cfg.memory_bytes,
                  label=bm)
    if got.mode == "calibrated":
        r = got.report()
        print(f"{bm}: calibrated time limits of {r['n_tasks']} tasks: max {r['cpu_limit_max']:g} CPU s "
              f"({r['measured']} references measured now)\n  cache {r['cache']}", file=sys.stderr, flush=True)
    return got


def per_task_frame(tasks: Sequence[benchmarks.Task], scored: Scored):
    """One row per task: the prompt, its first completion and verdict, n and c."""
    import pandas as pd

    first: dict[str, dict] = {}
    for row in scored.rows:
        tid = benchmarks.normalize_task_id(tasks[0].benchmark, row["task_id"])
        first.setdefault(tid, row)
    prompts = {t.task_id: t.prompt for t in tasks}
    return pd.DataFrame([
        {
            "task_id": t["task_id"],
            "prompt": prompts[t["task_id"]],
            "completion": first[t["task_id"]]["completion"],
            "result": first[t["task_id"]]["result"],
            "n_samples": t["n_samples"],
            "n_passed": t["n_passed"],
            **({"cpu_limit": scored.limits.of(t["task_id"]).cpu} if scored.limits is not None else {}),
        }
        for t in scored.per_task
    ])


def _pass_at_k_metric(k: int):
    from mlflow.metrics import MetricValue, make_metric

    def eval_fn(predictions, n_samples, n_passed):
        scores = [pass_at_k(int(n), int(c), k) for n, c in zip(n_samples, n_passed)]
        return MetricValue(scores=scores, aggregate_results={"mean": sum(scores) / len(scores)})

    return make_metric(eval_fn=eval_fn, greater_is_better=True, name=f"pass_at_{k}")


def _log_evaluation(mlflow, name: str, ckpt: str, bm: str, tasks, scored: Scored, ks,
                    loss: Optional[SolutionLoss] = None, table3_rows: Optional[list[dict]] = None) -> None:
    """One nested MLflow run holding the evaluation of a checkpoint on a benchmark."""
    df = per_task_frame(tasks, scored)
    from phi1.tracking import metric_key, nested_run

    tags = {"phi1.checkpoint": name, "phi1.benchmark": bm, "phi1.stage": "evaluate"}
    with nested_run(f"{name}/{bm}", tags):
        mlflow.log_params({"checkpoint": ckpt, "benchmark": bm, "n_tasks": len(df),
                           "sandbox.isolation": scored.summary["isolation"]})
        if scored.limits is not None:  # the per-task limits, the machine and the cache they came from
            report = scored.limits.report()
            mlflow.log_params({f"time_limits.{k}": v for k, v in report.items()
                               if k in ("mode", "timeout", "floor", "factor", "wall_factor", "machine", "cache")})
            if scored.limits.mode == "calibrated":
                mlflow.log_metrics({"time_limit_cpu_max": report["cpu_limit_max"],
                                    "reference_cpu_total": report["reference_cpu_total"]})
                mlflow.log_dict({**report, "tasks": scored.limits.table()}, "time_limits.json")
        mlflow.models.evaluate(
            data=df, predictions="completion", model_type=None,
            extra_metrics=[_pass_at_k_metric(k) for k in ks if k <= int(df["n_samples"].min())],
        )
        summary = {k: v for k, v in scored.summary.items() if k.startswith("pass@")}
        mlflow.log_metrics({metric_key(k): v for k, v in summary.items()})
        if loss is not None:
            mlflow.log_metrics(loss.metrics())
            mlflow.log_text("".join(json.dumps(r) + "\n" for r in loss.per_task), "solution_loss.jsonl")
        if table3_rows is not None:  # Table 3: similar / not similar tasks at each tau
            mlflow.log_metrics(table3.mlflow_metrics(table3_rows))
            mlflow.log_dict({"rule": table3.RULE, "rows": table3_rows}, "table3.json")
        mlflow.log_dict(scored.summary, "summary.json")
        mlflow.log_text("".join(json.dumps(r) + "\n" for r in scored.rows), "results.jsonl")
