"""The contamination report: counts per detector, the tau sweep table, and its plot.

    table = sweep(flags, taus=(0.95, 0.9, 0.85, 0.8), n_items={...}, n_tasks={...})
    plot_sweep(table, "reports/contamination_sweep.png")

A flag is one (dataset, item id, benchmark task, detector, score) with score at or above
the lowest threshold asked about; an item is removed at tau when any of its flags
reaches tau, and a task "has a similar training item" at tau likewise (phi-1, Table 3).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

Flag = dict[str, Any]
"""Keys: dataset, id, unit, benchmark, task_id, detector, score."""


def removed_ids(flags: Iterable[Flag], tau: float, eps: float = 1e-9) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for f in flags:
        if f["score"] >= tau - eps:
            out[f["dataset"]].add(f["id"])
    return out


def task_scores(flags: Iterable[Flag]) -> dict[str, dict[str, float]]:
    """{benchmark: {task_id: the highest score of any flag on it}}: every task with a flag
    (a score at or above the lowest threshold asked about); a task is similar at tau when
    its score is at or above tau, as in `sweep`. Tasks absent scored below every tau."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for f in flags:
        got = out[f["benchmark"]]
        got[f["task_id"]] = max(got.get(f["task_id"], f["score"]), f["score"])
    return {b: dict(sorted(v.items())) for b, v in sorted(out.items())}


def sweep(flags: Sequence[Flag], taus: Sequence[float], datasets: Sequence[str], benchmarks: dict[str, int],
          detectors: Sequence[str], eps: float = 1e-9) -> list[dict[str, Any]]:
    """One row per tau (highest first): items removed per dataset, tasks with a similar
    item per benchmark (any dataset, and exercises alone), and both per detector."""
    rows = []
    for tau in sorted(set(taus), reverse=True):
        hit = [f for f in flags if f["score"] >= tau - eps]
        row: dict[str, Any] = {"tau": tau}
        row["removed"] = {d: len({f["id"] for f in hit if f["dataset"] == d}) for d in datasets}
        row["tasks_similar"] = {b: len({f["task_id"] for f in hit if f["benchmark"] == b}) for b in benchmarks}
        row["tasks_similar_to_exercises"] = {
            b: len({f["task_id"] for f in hit if f["benchmark"] == b and f["dataset"] == "exercises"}) for b in benchmarks
        }
        row["by_detector"] = {
            det: {
                "removed": {d: len({f["id"] for f in hit if f["dataset"] == d and f["detector"] == det}) for d in datasets},
                "tasks_similar": {b: len({f["task_id"] for f in hit if f["benchmark"] == b and f["detector"] == det})
                                  for b in benchmarks},
            }
            for det in detectors
        }
        rows.append(row)
    return rows


def plot_sweep(table: Sequence[dict[str, Any]], benchmarks: dict[str, int], path: str | Path) -> None:
    """Items removed (per dataset) and benchmark tasks with a similar item, against tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from phi1.io import atomic_file

    taus = [r["tau"] for r in table]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for d in (table[0]["removed"] if table else {}):
        left.plot(taus, [r["removed"][d] for r in table], marker="o", label=d)
    left.set_xlabel("tau")
    left.set_ylabel("items removed")
    left.set_title("Training items removed")
    left.invert_xaxis()
    left.legend()
    for b, total in benchmarks.items():
        right.plot(taus, [100.0 * r["tasks_similar"][b] / max(total, 1) for r in table], marker="o",
                   label=f"{b} (of {total})")
    right.set_xlabel("tau")
    right.set_ylabel("% of tasks")
    right.set_title("Benchmark tasks with a similar training item")
    right.invert_xaxis()
    right.legend()
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


__all__ = ["Flag", "sweep", "task_scores", "removed_ids", "plot_sweep"]
