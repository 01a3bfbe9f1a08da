"""Execution check of exercises: run each exercise's docstring examples in the sandbox.

    verdicts = run_examples([ex.program for ex in exercises], timeout=5.0, memory_bytes=512 << 20)
    # -> ["passed", "failed", "timeout", "killed", ...] in input order

Only exercises whose docstring carries examples have something to run; the caller keeps an
exercise when its verdict is `passed` and counts the others as `examples_<verdict>`.
The sandbox (phi1.evaluate.sandbox) owns everything dangerous; this module only fans out.
"""

from __future__ import annotations

import sys
from typing import Sequence


def run_examples(programs: Sequence[str], timeout: float, memory_bytes: int, workers: int = 2,
                 progress: bool = True) -> list[str]:
    """The sandbox verdict (`passed`, `failed`, `timeout`, `killed`) of each program."""
    if not programs:
        return []
    from tqdm.auto import tqdm

    from phi1.evaluate.sandbox import Sandbox

    with Sandbox(workers=min(workers, len(programs))) as box, tqdm(
        total=len(programs), desc="check examples", unit="ex", file=sys.stderr,
        disable=not progress, dynamic_ncols=True, mininterval=1.0,
    ) as bar:
        results = box.map(programs, timeout=timeout, memory_bytes=memory_bytes,
                          progress=lambda n: bar.update(n - bar.n))
    return [r.status for r in results]


__all__ = ["run_examples"]
