"""Execution check of exercises: run each exercise's docstring examples in the sandbox.

    with check_sandbox(workers=2, unsafe_guard=False) as box:
        verdicts = run_examples([ex.program for ex in exercises], timeout=5.0, memory_bytes=512 << 20, sandbox=box)
    # -> ["passed", "failed", "timeout", "killed", ...] in input order

Only exercises whose docstring carries examples have something to run; the caller keeps an
exercise when its verdict is `passed` and counts the others as `examples_<verdict>`.
The sandbox (phi1.engines.sandbox) owns everything dangerous; this module only fans out.
It fails closed: without namespaces it runs nothing unless `unsafe_guard` allows the guard.
"""

from __future__ import annotations

from typing import Optional, Sequence

from phi1.engines.progress import progress_bar
from phi1.engines.sandbox import Sandbox


def check_sandbox(workers: int = 2, unsafe_guard: bool = False) -> Sandbox:
    """The sandbox of the checks (a context manager); without namespaces, a one-line
    SandboxUnavailable unless `unsafe_guard` (synthesize.unsafe_guard)."""
    from phi1.engines.sandbox import open_sandbox

    return open_sandbox(workers, unsafe_guard=unsafe_guard, param="synthesize.unsafe_guard")


def run_examples(programs: Sequence[str], timeout: float, memory_bytes: int, workers: int = 2,
                 progress: bool = True, sandbox: Optional[Sandbox] = None,
                 unsafe_guard: bool = False) -> list[str]:
    """The sandbox verdict (`passed`, `failed`, `timeout`, `killed`) of each program, run
    in `sandbox`, or in a `check_sandbox(workers, unsafe_guard)` opened for them."""
    if not programs:
        return []
    if sandbox is None:
        with check_sandbox(min(workers, len(programs)), unsafe_guard) as box:
            return run_examples(programs, timeout, memory_bytes, progress=progress, sandbox=box)
    with progress_bar(len(programs), "check examples", enabled=progress) as update:
        results = sandbox.map(programs, timeout=timeout, memory_bytes=memory_bytes, progress=update)
    return [r.status for r in results]


__all__ = ["check_sandbox", "run_examples"]
