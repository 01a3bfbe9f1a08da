"""Table 3 of phi-1, as the paper did it: scores on the benchmark tasks similar and not
similar to the training data, at each threshold of the decontamination sweep.

    sim = similarity(json.load(open("reports/contamination.json")))
    rows = subset_rows(sim, "humaneval", scored.per_task, loss.per_task, ks=(1,))

A task is "similar" at tau when any detector (13-gram, embedding, AST match) scored a
training item (filtered, textbook, exercises) at or above tau against it: the rule the
decontaminate report counts as `tasks_similar` (phi1.decontaminate.report.sweep), read
from the report's per-task highest scores (`task_scores`). Subsets are taken among the
tasks evaluated: pass@k over the tasks that were generated and run (`evaluate.limit`,
`n_tasks`), solution loss over the tasks it was scored on (`solution_loss_limit`,
`solution_tasks`, token-weighted as `solution_loss`); each row says how many tasks it
holds, and a subset without tasks has null scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from phi1.errors import Phi1Error

EPS = 1e-9
"""As phi1.decontaminate.report: a score within EPS below tau counts as at tau."""

RULE = ("similar at tau: some detector scored a training item (filtered, textbook or exercises) "
        ">= tau against the task (reports/contamination.json `task_scores`)")


@dataclass(frozen=True)
class Similarity:
    """What the contamination report says about each task."""

    taus: tuple[float, ...]
    """The sweep's thresholds (and the report's tau), highest first."""
    scores: dict[str, dict[str, float]]
    """{benchmark: {task_id: highest score}}; an absent task scored below every tau."""
    benchmark_tasks: dict[str, int]
    """Tasks per benchmark the report scored."""
    tasks_similar: dict[float, dict[str, int]]
    """The report's own count of similar tasks per tau and benchmark (all tasks)."""

    def similar(self, benchmark: str, tau: float) -> set[str]:
        """The ids of the benchmark's tasks similar at `tau` (over the whole benchmark)."""
        return {t for t, s in self.scores.get(benchmark, {}).items() if s >= tau - EPS}


def similarity(report: Any, source: str | Path = "reports/contamination.json") -> Similarity:
    """Read a decontaminate report; a one-line Phi1Error when it cannot say per task.

    Per-task scores come from `task_scores`; a report without them (written before they
    were added) falls back to `flagged` when that list is complete. The split is checked
    against the report's own `tasks_similar` counts."""
    if not isinstance(report, dict) or "sweep" not in report or "tau" not in report:
        raise Phi1Error(f"{source}: not a decontaminate report (no `sweep` and `tau`)")
    taus = tuple(sorted({float(r["tau"]) for r in report["sweep"]} | {float(report["tau"])}, reverse=True))
    if "task_scores" in report:
        scores = {b: {t: float(s) for t, s in v.items()} for b, v in report["task_scores"].items()}
    else:
        flagged = report.get("flagged") or []
        if report.get("n_flagged", len(flagged)) != len(flagged):
            raise Phi1Error(f"{source}: lists {len(flagged)} of {report['n_flagged']} flags and no `task_scores`; "
                            "rerun decontaminate")
        scores = {}
        for f in flagged:
            got = scores.setdefault(f["benchmark"], {})
            got[f["task_id"]] = max(got.get(f["task_id"], f["score"]), float(f["score"]))
    counts = {float(r["tau"]): dict(r.get("tasks_similar") or {}) for r in report["sweep"]}
    sim = Similarity(taus, scores, dict(report.get("benchmark_tasks") or {}), counts)
    for tau, per_bench in counts.items():
        for bench, n in per_bench.items():
            if len(sim.similar(bench, tau)) != n:
                raise Phi1Error(f"{source}: {len(sim.similar(bench, tau))} {bench} tasks score >= {tau} but its "
                                f"sweep counts {n} similar; the report is inconsistent, rerun decontaminate")
    return sim


def _pass(rows: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> dict[str, Optional[float]]:
    out: dict[str, Optional[float]] = {}
    for k in ks:
        vals = [r[f"pass@{k}"] for r in rows if f"pass@{k}" in r]
        out[f"pass@{k}"] = sum(vals) / len(vals) if vals else None
    return out


def _loss(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    rows = [r for r in rows if r.get("loss") is not None and r.get("tokens")]
    tokens = sum(int(r["tokens"]) for r in rows)
    return {"solution_tasks": len(rows), "solution_tokens": tokens,
            "solution_loss": sum(r["loss"] * r["tokens"] for r in rows) / tokens if tokens else None}


def subset_rows(sim: Similarity, benchmark: str, per_task: Sequence[Mapping[str, Any]],
                loss_per_task: Optional[Sequence[Mapping[str, Any]]], ks: Sequence[int]) -> list[dict[str, Any]]:
    """Two rows per tau (similar, not similar) of one checkpoint on one benchmark:
    n_tasks and pass@k among `per_task` (execute.Scored.per_task), solution_tasks,
    solution_tokens and solution_loss among `loss_per_task` (SolutionLoss.per_task;
    None: no loss scored). `tasks_similar_total`: the similar tasks of the whole benchmark;
`task_ids` (similar rows): the evaluated ones among them."""
    if benchmark not in sim.benchmark_tasks:
        raise Phi1Error(f"the contamination report does not cover {benchmark} "
                        f"(it covers {', '.join(sim.benchmark_tasks) or 'nothing'})")
    rows = []
    for tau in sim.taus:
        similar = sim.similar(benchmark, tau)
        for subset, inside in (("similar", True), ("not_similar", False)):
            mine = [r for r in per_task if (r["task_id"] in similar) == inside]
            row: dict[str, Any] = {"tau": tau, "subset": subset, "n_tasks": len(mine), **_pass(mine, ks)}
            if loss_per_task is not None:
                row.update(_loss([r for r in loss_per_task if (r["task_id"] in similar) == inside]))
            row["tasks_similar_total"] = len(similar)
            if inside:
                row["task_ids"] = sorted(r["task_id"] for r in mine)
            rows.append(row)
    return rows


def covers(sim: Similarity, benchmark: str, mbpp_split: str) -> Optional[str]:
    """Why the report cannot split `benchmark` as evaluated, or None when it can: it
    scored HumanEval and the MBPP test split (phi1.decontaminate.references)."""
    if benchmark not in sim.benchmark_tasks:
        return f"the contamination report does not cover {benchmark}"
    if benchmark == "mbpp" and mbpp_split != "test":
        return f"the contamination report scored the MBPP test split, not {mbpp_split}"
    return None


def mlflow_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`table3.tau_0.90.similar.pass_at_1`-style metrics of `subset_rows` (nulls left out)."""
    out = {}
    for r in rows:
        for key in r:
            if key.startswith("pass@") or key in ("n_tasks", "solution_loss", "solution_tasks"):
                if r[key] is not None:
                    out[f"table3.tau_{r['tau']:.2f}.{r['subset']}.{key.replace('@', '_at_')}"] = float(r[key])
    return out


__all__ = ["Similarity", "similarity", "subset_rows", "covers", "mlflow_metrics", "RULE", "EPS"]
