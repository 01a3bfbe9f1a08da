"""`phi1 ablate` in the terminal: live progress on stderr, then the results table, the
mean +- sd table of seed repeats, one verdict line per comparison, and exit status 1
when a variant failed. `command()` is what the CLI calls with its raw option values."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from phi1.ablate.plan import DEFAULT_EXPERIMENT, DEFAULT_MAX_TOKENS, DEFAULT_TARGET, parse_seeds, split_variants
from phi1.ablate.results import COLUMNS
from phi1.ablate.stage import run
from phi1.ablate.stats import SUMMARY_METRICS, verdicts

# Column headers of the terminal tables.
HEADERS = {"humaneval_pass@1": "HE pass@1", "mbpp_pass@1": "MBPP pass@1",
           "humaneval_solution_loss": "HE loss/tok", "mbpp_solution_loss": "MBPP loss/tok",
           "humaneval_solution_nats_per_char": "HE loss/char", "mbpp_solution_nats_per_char": "MBPP loss/char",
           "probe_solution_nats_per_char": "probe loss/char", "probe_emergence_delta": "probe ft-base",
           "pretrain_val_loss": "pretrain val", "finetune_val_loss": "finetune val",
           "tokens_seen": "tokens seen", "pretrain_pool_tokens": "pool tokens"}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def table(rows: Sequence[dict[str, Any]], title: str = "phi1 ablation"):
    """The results as a rich Table."""
    from rich.table import Table

    t = Table(title=title)
    cols = [c for c in COLUMNS if c not in ("exp", "exp_rev") and not c.endswith("_truncated") and "_ci95_" not in c
            and (not c.startswith("probe_") or any(r.get(c) is not None for r in rows))]
    for c in cols:
        t.add_column(HEADERS.get(c, c), justify="left" if c in ("variant", "checkpoint") else "right")
    for r in rows:
        t.add_row(*(_fmt(r.get(c)) for c in cols))
    return t


def summary_table(stats: dict[str, Any], title: str = "mean +- sd over seeds"):
    """The per-variant means and sds as a rich Table (for seed repeats)."""
    from rich.table import Table

    t = Table(title=title)
    for c in ("variant", "checkpoint", "seeds"):
        t.add_column(c)
    metrics = [m for m in SUMMARY_METRICS if not m.startswith("probe_")  # probe: when the exps ran it
               or any(e[f"{m}_mean"] is not None for e in stats.get("summary", []))]
    for m in metrics:
        t.add_column(HEADERS[m], justify="right")
    for e in stats.get("summary", []):
        cells = []
        for m in metrics:
            mean, sd = e[f"{m}_mean"], e[f"{m}_sd"]
            cells.append("-" if mean is None else f"{mean:.4f}" + ("" if sd is None else f" +- {sd:.4f}"))
        t.add_row(e["variant"], e["checkpoint"], ",".join(str(x) for x in e["seeds"]), *cells)
    return t


def command(variants: Optional[str] = None, max_tokens: int = DEFAULT_MAX_TOKENS, overrides: Sequence[str] = (),
            seeds: Optional[str] = None, target: str = DEFAULT_TARGET, jobs: int = 1,
            experiment: str = DEFAULT_EXPERIMENT, out: Path = Path("reports/ablation"), collect_only: bool = False,
            baseline: str = "HEAD", timeout: Optional[float] = None, poll: float = 10.0) -> int:
    """`phi1 ablate` with its option values as typed (`variants` and `seeds` comma-separated):
    runs the ablation, prints progress and results; returns the exit status (1: a variant
    failed). A Phi1Error (bad options, no DVC repo, nothing to collect) propagates."""
    from rich.console import Console

    err = Console(stderr=True)
    last: dict = {}

    def progress(states: dict, stages: dict) -> None:
        line = "  ".join(f"{n}: {s}" + (f" ({stages[n]})" if stages.get(n) else "") for n, s in states.items())
        if line != last.get("line"):
            last["line"] = line
            err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}", highlight=False)

    result = run(split_variants(variants), max_tokens, overrides or [], target=target, jobs=jobs, seeds=parse_seeds(seeds),
                 experiment=experiment, out=out, collect_only=collect_only, baseline=baseline, timeout=timeout, poll=poll,
                 progress=progress, warn=lambda m: err.print(f"[yellow]warning:[/yellow] {m}", highlight=False))
    console = Console(width=max(Console().width, 160))
    console.print(table(result.rows, f"phi1 ablation ({result.seconds:.0f} s)"))
    stats = result.stats
    if any(e["n"] > 1 for e in stats["summary"]):
        console.print(summary_table(stats))
    for line in verdicts(stats):
        console.print(line, highlight=False)
    print(f"{out}/results.json  {out}/figure.png  MLflow experiment {experiment}", flush=True)
    if result.failed:
        print(f"error: variants failed: {', '.join(result.failed)} (`dvc queue logs NAME`)", file=sys.stderr, flush=True)
        return 1
    return 0
