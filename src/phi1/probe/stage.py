"""The `probe` stage: generate completions of every probe with each checkpoint, run them
headless in the sandbox, score them, and log one MLflow evaluation per checkpoint.

    phi1 probe run --out reports/probe --metrics metrics/probe.json   # params: `probe`
    dvc repro probe

Generation is the evaluate stage's (`phi1.engines.generation`, greedy). Writes
`<out>/<checkpoint>/{samples,results}.jsonl` and `summary.json`, and
`metrics/probe.json` = {checkpoint: {"pass_rate", "api_validity", "solution_loss",
"api_topk", "by_library": {library: {...}}}, "emergence": {...}} for `dvc metrics`. The
continuous measures (phi1.probe.emergence), which move where every pass rate is 0:
`solution_loss`, the mean over probes of the nats per character of the reference body
given the prompt, and `api_topk`, the share of the references' library API names the
model ranks in its top `probe.api_topk_k` where they start; `emergence` holds the last
checkpoint (finetuned) minus the first (base), paired by probe: `solution_loss_delta`
{mean, sd, n, ci95: {low, high} (Student t)} overall and per library, and
`api_topk_delta`.

In MLflow the stage run holds one nested run per checkpoint, an MLflow evaluation
(`mlflow.models.evaluate`) whose `eval_results_table` has one row per probe (library,
prompt, completion, passed and diagnostics, the reference's nats per character and API
top-k hits), with metrics `pass_rate`, `api_validity`, `solution_loss`, `api_topk` and
`<library>.<each>`: select the base and the finetuned run in the UI to see the paper's
comparison per library; each carries the param `sandbox.isolation` (namespaces, or guard
where `unsafe_guard` allowed it), as do the results rows and summary.json (`isolation`).
Nothing is written unless every checkpoint finished, and nothing runs where the sandbox
has no namespaces and `unsafe_guard` is false.
"""

from __future__ import annotations

from pathlib import Path

from phi1.config import ProbeConfig
from phi1.engines.progress import progress_bar
from phi1.engines.generation import check_model_dir, generate, load_model, write_samples
from phi1.errors import Phi1Error
from phi1.io import atomic_dir, write_json
from phi1.probe.emergence import api_topk, as_task, emergence, probe_solution_loss, summarize
from phi1.probe.score import ProbeScore, probe_sandbox, score, write_results
from phi1.probe.suite import load_suite


def metrics_of(summary: dict) -> dict:
    """What metrics/probe.json keeps of a checkpoint's summary."""
    return {k: summary[k] for k in ("pass_rate", "api_validity", "solution_loss", "api_topk", "api_names",
                                    "solution_truncated", "n_probes", "by_library")}


def with_knowledge(summary: dict, knowledge: dict) -> dict:
    """The scored summary plus the continuous measures (`summarize`), per library too."""
    by_library = {lib: {**d, **knowledge["by_library"].get(lib, {})} for lib, d in summary["by_library"].items()}
    return {**summary, **{k: v for k, v in knowledge.items() if k != "by_library"}, "by_library": by_library}


def run(cfg: ProbeConfig, out: str | Path, metrics_path: str | Path) -> dict:
    """Run the stage; returns what it writes to `metrics_path`."""
    import mlflow

    from phi1.tracking import stage_run

    for ckpt in cfg.checkpoints:
        check_model_dir(ckpt, "probe.checkpoints")
    if "emergence" in [Path(c).name for c in cfg.checkpoints]:
        raise Phi1Error("probe.checkpoints: a checkpoint folder may not be named `emergence` (a metrics key)")
    probes = load_suite(libraries=tuple(cfg.libraries))
    tasks = [as_task(p) for p in probes]
    metrics: dict[str, dict] = {}
    losses: dict[str, dict] = {}
    # The sandbox first: where it refuses to run (no namespaces, no unsafe_guard), nothing is written.
    with probe_sandbox(cfg.workers, unsafe_guard=cfg.unsafe_guard, param="probe.unsafe_guard") as box, \
            atomic_dir(out, cfg.checkpoints) as tmp, \
            stage_run("probe", cfg, inputs=list(cfg.checkpoints), tags={"phi1.sandbox": box.isolation}):
        for ckpt in cfg.checkpoints:
            lm = load_model(ckpt)
            name = lm.name
            with progress_bar(len(tasks), f"{name} probes: generate") as update:
                generated = generate(lm, tasks, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                     progress=update)
            fit = lm.fit.take()  # prompts cut / max_new_tokens lowered to fit the context
            losses[name] = probe_solution_loss(lm, probes, batch_size=cfg.batch_size)
            topk = api_topk(lm, probes, k=cfg.api_topk_k)
            samples = [{"probe_id": s["task_id"], "completion": s["completion"]} for s in generated]
            with progress_bar(len(samples), f"{name} probes: execute") as update:
                scored = score(samples, probes, box, timeout=cfg.timeout, memory_bytes=cfg.memory_bytes,
                               progress=update)
            for row in scored.rows:
                row.update(solution_nats_per_char=losses[name][row["probe_id"]]["nats_per_char"],
                           api_names=topk[row["probe_id"]]["names"], api_topk_hits=topk[row["probe_id"]]["hits"])
            scored.summary = with_knowledge(scored.summary, summarize(probes, losses[name], topk))
            write_samples(tmp / name / "samples.jsonl", samples)
            write_results(tmp / name / "results.jsonl", scored.rows)
            write_json(tmp / name / "summary.json", {"checkpoint": str(ckpt), **scored.summary, **fit,
                                                     "api_topk_k": cfg.api_topk_k})
            metrics[name] = metrics_of(scored.summary)
            _log_evaluation(mlflow, name, str(ckpt), probes, scored)
            mlflow.log_metrics({f"{name}.{k}": v for k, v in {**_flat(scored.summary), **fit}.items()})
        names = [Path(c).name for c in cfg.checkpoints]
        metrics["emergence"] = emergence(probes, names, losses, metrics)
        mlflow.log_metrics(_flat_emergence(metrics["emergence"]))
        write_json(metrics_path, metrics)
    return metrics


_RATES = ("pass_rate", "api_validity", "solution_loss", "api_topk")


def _flat(summary: dict) -> dict[str, float]:
    """pass_rate, api_validity, solution_loss, api_topk and <library>.<each> (a null is left out)."""
    from phi1.tracking import flatten

    def rates(d: dict) -> dict:
        return {k: d[k] for k in _RATES if k in d}

    return flatten({**rates(summary), **{lib: rates(d) for lib, d in summary["by_library"].items()}}, numbers=True)


def _flat_emergence(em: dict) -> dict[str, float]:
    """emergence.* as MLflow metrics (emergence.solution_loss_delta.ci95.low, ...)."""
    from phi1.tracking import flatten

    return flatten(em, "emergence", numbers=True)


def per_probe_frame(probes, scored: ProbeScore):
    import pandas as pd

    prompts = {p.id: p.prompt for p in probes}
    return pd.DataFrame([
        {"probe_id": r["probe_id"], "library": r["library"], "prompt": prompts[r["probe_id"]],
         "completion": r["completion"], "passed": int(r["passed"]), "result": r["result"],
         "parses": int(r["parses"]), "imports": int(r["imports"]), "runs": int(r["runs"]),
         "api_chains": r["api_chains"], "api_valid": r["api_valid"], "api_invalid": " ".join(r["api_invalid"]),
         "solution_nats_per_char": r["solution_nats_per_char"], "api_names": r["api_names"],
         "api_topk_hits": r["api_topk_hits"]}
        for r in scored.rows
    ])


def _probe_metric(column: str):
    from mlflow.metrics import MetricValue, make_metric

    def eval_fn(predictions, passed, api_chains, api_valid):
        if column == "passed":
            scores = [float(p) for p in passed]
            agg = sum(scores) / len(scores)
        else:
            scores = [v / c if c else None for c, v in zip(api_chains, api_valid)]
            agg = sum(api_valid) / sum(api_chains) if sum(api_chains) else 0.0
        return MetricValue(scores=scores, aggregate_results={"mean": agg})

    return make_metric(eval_fn=eval_fn, greater_is_better=True,
                       name="probe_pass" if column == "passed" else "probe_api_validity")


def _knowledge_metric(column: str):
    """The continuous measures as MLflow evaluation metrics: per probe, and their summary
    (the mean of nats per character; pooled API top-k hits / names)."""
    from mlflow.metrics import MetricValue, make_metric

    if column == "solution":
        def eval_fn(predictions, solution_nats_per_char):
            scores = [float(x) for x in solution_nats_per_char]
            return MetricValue(scores=scores, aggregate_results={"mean": sum(scores) / len(scores)})

        return make_metric(eval_fn=eval_fn, greater_is_better=False, name="probe_solution_loss")

    def eval_fn(predictions, api_names, api_topk_hits):
        scores = [h / n if n else None for n, h in zip(api_names, api_topk_hits)]
        return MetricValue(scores=scores,
                           aggregate_results={"mean": sum(api_topk_hits) / sum(api_names) if sum(api_names) else 0.0})

    return make_metric(eval_fn=eval_fn, greater_is_better=True, name="probe_api_topk")


def _log_evaluation(mlflow, name: str, ckpt: str, probes, scored: ProbeScore) -> None:
    """One nested MLflow run holding the probe evaluation of a checkpoint."""
    df = per_probe_frame(probes, scored)
    from phi1.tracking import nested_run

    tags = {"phi1.checkpoint": name, "phi1.stage": "probe"}
    with nested_run(f"{name}/probe", tags):
        mlflow.log_params({"checkpoint": ckpt, "n_probes": len(df), "sandbox.isolation": scored.summary["isolation"]})
        mlflow.models.evaluate(data=df, predictions="completion", model_type=None,
                               extra_metrics=[_probe_metric("passed"), _probe_metric("api"),
                                              _knowledge_metric("solution"), _knowledge_metric("api_topk")])
        mlflow.log_metrics(_flat(scored.summary))
        mlflow.log_dict(scored.summary, "summary.json")
