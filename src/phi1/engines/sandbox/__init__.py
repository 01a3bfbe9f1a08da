"""The sandbox: runs untrusted programs (model completions, synthesized examples, probes).

    with open_sandbox(workers=2) as box:             # fails closed: namespaces or a one-line error
        result = box.run("assert 1 + 1 == 2", timeout=3.0)

`worker.py` is the whole mechanism (the caller's `Sandbox` and the stand-alone worker it
starts with `python -I worker.py --worker`); its module docstring lists what it covers
and what it does not. This module adds what the stages share: `open_sandbox`, which turns
a missing isolation or a failed start into a one-line Phi1Error, and the command-line
limits check.
"""

from __future__ import annotations

from typing import Optional, Sequence

from phi1.engines.sandbox.worker import (
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    STATUSES,
    UID_BASE,
    UID_SPAN,
    ExecutionResult,
    NamespacesUnavailable,
    Sandbox,
    SandboxError,
    execute,
)
from phi1.errors import Phi1Error


class SandboxUnavailable(Phi1Error):
    """No namespace isolation here and the guard alone was not allowed: nothing untrusted ran."""


def open_sandbox(workers: Optional[int] = None, *, unsafe_guard: bool = False, param: Optional[str] = None,
                 display: Optional[str] = None, preload: Sequence[str] = ()) -> Sandbox:
    """A Sandbox that fails closed; a start-up failure is a one-line Phi1Error.

    Programs run under namespace isolation only: where the OS allows none, this raises
    SandboxUnavailable (the OS error, how to enable namespaces, how to opt out) unless
    `unsafe_guard` allows the in-process guard alone. `param` names the params key that
    sets `unsafe_guard` (e.g. `evaluate.unsafe_guard`) in that message."""
    try:
        return Sandbox(workers=workers, isolation="auto" if unsafe_guard else "namespaces",
                       display=display, preload=preload)
    except NamespacesUnavailable as exc:
        opt_out = "--unsafe-guard" + (f" (or set {param}: true)" if param else "")
        raise SandboxUnavailable(
            f"sandbox: {exc}; nothing was run. To run the untrusted code without isolation "
            f"anyway (UNSAFE: the in-process guard only), pass {opt_out}"
        ) from None
    except (SandboxError, ValueError) as exc:
        raise Phi1Error(f"sandbox: {exc}") from None


def check_limits(timeout: float, workers: int | None, memory_bytes: int) -> None:
    """The sandbox limits a user gives on the command line, checked before any work."""
    if not timeout > 0:
        raise Phi1Error(f"--timeout must be a positive number of seconds, got {timeout}")
    if workers is not None and workers < 1:
        raise Phi1Error(f"--workers must be >= 1 (or left out: one per CPU core), got {workers}")
    if memory_bytes < 1:
        raise Phi1Error(f"--memory-bytes must be positive, got {memory_bytes}")


__all__ = ["Sandbox", "ExecutionResult", "execute", "open_sandbox", "check_limits", "SandboxError",
           "SandboxUnavailable", "NamespacesUnavailable", "DEFAULT_TIMEOUT", "DEFAULT_MEMORY", "STATUSES",
           "UID_BASE", "UID_SPAN"]
