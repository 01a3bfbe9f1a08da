"""Time limits that do not depend on the machine's speed or load: each task's limit is
calibrated from the CPU time its reference solution takes on the machine at hand.

    limits = calibrate(tasks, box, floor=3.0, factor=4.0)  # measures only what the cache lacks
    limit = limits.of("Mbpp/123")   # Limit(cpu=11.0, wall=55.0) where its reference takes 2.6 CPU s
    box.map([program], timeout=limit.wall, cpu_timeout=limit.cpu)
    limits = fixed(3.0)             # the override: 3 wall-clock s for every task (CPU: int(3) + 2)

How. As EvalPlus does (`evalplus/eval/__init__.py`: `max(min_time_limit,
gt_time_limit_factor * ref_time)`, its ground truth cached in the user cache), a task's
limit is max(floor, factor x the reference's time), rounded up to whole seconds. Unlike
EvalPlus, the time is CPU time (user + system, from wait4), not wall-clock time, both
when measured and when enforced: a program's CPU time barely moves when other processes
share the cores (MBPP 123's reference: 2.5-2.8 CPU s idle and beside two busy loops,
while its wall time went from 5.0 to 9.4 s, and to 30 s with eight jobs on two cores), so a
verdict no longer depends on what else the machine runs. The limit is enforced by the
sandbox's `cpu_timeout` (RLIMIT_CPU); the wall clock stays only as a backstop for a
program that sleeps or blocks without using CPU, at WALL_FACTOR x the CPU limit.

References run in phi1's own sandbox, the same as the completions, with a generous limit
(CALIBRATION_CPU); one that does not pass (MBPP 341's depends on set order) still gets
the limit of the CPU time it used. Measurements are cached per machine in
`$XDG_CACHE_HOME/phi1/timeouts-<machine>.json` (default ~/.cache; `<machine>` a hash of
the host name, CPU model, usable cores and architecture), one entry per benchmark, task
id, hash of the program (reference and tests) and Python version, so a changed task or
interpreter is measured again. The limits vary per machine: they belong in MLflow, on
stderr and in `phi1 evaluate execute`'s output, never in DVC outputs
(`TimeLimits.params` is the part that does not vary).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from phi1.engines.benchmarks import Task
from phi1.engines.progress import progress_bar
from phi1.engines.sandbox import Sandbox
from phi1.errors import Phi1Error

DEFAULT_FLOOR = 3.0
"""CPU seconds every task gets at least (the former fixed default, now counted in CPU time)."""
DEFAULT_FACTOR = 4.0
"""A task's CPU limit is this many times its reference's CPU time (EvalPlus's gt_time_limit_factor)."""
WALL_FACTOR = 5.0
"""The wall-clock backstop: a program is stopped after this many times its CPU limit in wall seconds."""
CALIBRATION_CPU = 120.0
"""CPU seconds a reference may use while it is measured."""


@dataclass(frozen=True)
class Limit:
    """The limits of one program: CPU seconds and wall-clock seconds."""

    cpu: float
    wall: float


@dataclass(frozen=True)
class TimeLimits:
    """The time limits of one evaluation, per task."""

    mode: str
    """calibrated (from the references' CPU time) or fixed (the `timeout` override)."""
    limits: dict[str, Limit] = field(default_factory=dict)
    """task id -> its Limit (calibrated mode)."""
    timeout: Optional[float] = None
    """The fixed wall-clock seconds of every task (fixed mode)."""
    floor: Optional[float] = None
    factor: Optional[float] = None
    reference_cpu: dict[str, float] = field(default_factory=dict)
    """task id -> CPU seconds its reference took (calibrated mode)."""
    cache: Optional[str] = None
    """The calibration cache file."""
    machine: Optional[str] = None
    """The machine fingerprint the cache is keyed by."""
    measured: int = 0
    """References measured by this calibration (the others came from the cache)."""

    def of(self, task_id: str) -> Limit:
        if self.mode == "fixed":
            return Limit(cpu=float(int(self.timeout) + 2), wall=float(self.timeout))  # the sandbox's default CPU
        return self.limits[task_id]

    def params(self) -> dict:
        """What does not vary between machines: fit for DVC outputs (summary.json)."""
        if self.mode == "fixed":
            return {"mode": "fixed", "timeout": self.timeout}
        return {"mode": "calibrated", "floor": self.floor, "factor": self.factor, "wall_factor": WALL_FACTOR}

    def report(self) -> dict:
        """Everything, for MLflow and stdout: the per-task limits and the cache's identity."""
        out = self.params()
        if self.mode == "calibrated":
            cpu = [lim.cpu for lim in self.limits.values()]
            out.update(
                machine=self.machine, cache=self.cache, n_tasks=len(cpu), measured=self.measured,
                cpu_limit_max=max(cpu, default=0.0),
                above_floor={t: lim.cpu for t, lim in self.limits.items() if lim.cpu > self.floor},
                reference_cpu_total=round(sum(self.reference_cpu.values()), 4),
            )
        return out

    def table(self) -> dict[str, dict]:
        """task id -> {cpu_limit, wall_limit, reference_cpu} (calibrated mode)."""
        return {t: {"cpu_limit": lim.cpu, "wall_limit": lim.wall, "reference_cpu": self.reference_cpu.get(t)}
                for t, lim in self.limits.items()}


def fixed(timeout: float) -> TimeLimits:
    """The override: `timeout` wall-clock seconds for every task, as before calibration."""
    if not timeout > 0:
        raise Phi1Error(f"timeout must be a positive number of seconds, got {timeout}")
    return TimeLimits(mode="fixed", timeout=float(timeout))


def limit_of(reference_cpu: float, floor: float, factor: float) -> Limit:
    """max(floor, factor x reference CPU time rounded up to whole seconds); wall = WALL_FACTOR x that."""
    cpu = max(float(floor), float(math.ceil(factor * reference_cpu)))
    return Limit(cpu=cpu, wall=cpu * WALL_FACTOR)


def machine_fingerprint() -> tuple[str, dict]:
    """A short hash naming this machine's speed class, and what it hashes."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") or line.startswith("Processor"):
                model = line.split(":", 1)[1].strip()
                break
    info = {"host": platform.node(), "cpu": model or platform.processor(), "cores": len(os.sched_getaffinity(0)),
            "arch": platform.machine()}
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:12], info


def cache_path(machine: Optional[str] = None) -> Path:
    """`$XDG_CACHE_HOME/phi1/timeouts-<machine>.json` (default ~/.cache)."""
    machine = machine or machine_fingerprint()[0]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "phi1" / f"timeouts-{machine}.json"


def cache_key(task: Task) -> str:
    """benchmark/task id/hash of the reference program/Python version."""
    program = task.program(task.canonical_solution)
    digest = hashlib.sha256(program.encode()).hexdigest()[:16]
    return f"{task.benchmark}/{task.task_id}/{digest}/{platform.python_implementation()}-{platform.python_version()}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # an unreadable cache is measured again and rewritten
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, new: dict, machine: dict) -> None:
    """Merge `new` entries into the cache file, under a lock, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = {**_read_cache(path), **new}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"machine": machine, "entries": dict(sorted(entries.items()))}, fh, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def calibrate(tasks: Sequence[Task], sandbox: Sandbox, floor: float = DEFAULT_FLOOR, factor: float = DEFAULT_FACTOR,
              *, memory_bytes: int = 1 << 30, use_cache: bool = True, label: str = "time limits") -> TimeLimits:
    """Each task's Limit from its reference's CPU time on this machine: cached ones read,
    the rest measured in `sandbox` (and cached; a reference the sandbox killed is not)
    under a progress bar labelled `label`. `use_cache=False` measures every one."""
    if not floor > 0 or not factor > 0:
        raise Phi1Error(f"time limits: floor and factor must be positive, got {floor} and {factor}")
    machine, info = machine_fingerprint()
    path = cache_path(machine)
    cached = _read_cache(path) if use_cache else {}
    keys = {t.task_id: cache_key(t) for t in tasks}
    todo = [t for t in tasks if not isinstance(cached.get(keys[t.task_id]), dict)
            or not isinstance(cached[keys[t.task_id]].get("cpu"), (int, float))]
    new: dict[str, dict] = {}
    if todo:
        with progress_bar(len(todo), f"{label}: calibrate") as update:
            results = sandbox.map([t.program(t.canonical_solution) for t in todo], memory_bytes=memory_bytes,
                                  timeout=CALIBRATION_CPU * WALL_FACTOR, cpu_timeout=CALIBRATION_CPU, progress=update)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for t, res in zip(todo, results):
            new[keys[t.task_id]] = {"cpu": res.cpu, "wall": res.duration, "status": res.status, "measured": now}
        keep = {k: v for k, v in new.items() if v["status"] != "killed"}
        if keep:
            _write_cache(path, keep, info)
    entries = {**cached, **new}
    ref = {t.task_id: float(entries[keys[t.task_id]]["cpu"]) for t in tasks}
    return TimeLimits(
        mode="calibrated", limits={tid: limit_of(cpu, floor, factor) for tid, cpu in ref.items()},
        floor=float(floor), factor=float(factor), reference_cpu=ref, cache=str(path), machine=machine,
        measured=len(todo),
    )


def resolve(tasks: Sequence[Task], sandbox: Sandbox, timeout: Optional[float], floor: float = DEFAULT_FLOOR,
            factor: float = DEFAULT_FACTOR, *, memory_bytes: int = 1 << 30, label: str = "time limits") -> TimeLimits:
    """`fixed(timeout)` when `timeout` is given (the override), else `calibrate(tasks, ...)`."""
    if timeout is not None:
        return fixed(timeout)
    return calibrate(tasks, sandbox, floor, factor, memory_bytes=memory_bytes, label=label)
