"""Score probe completions: run each in the sandbox under the GUI policy, diagnose it.

    phi1 probe score --samples s.jsonl --out r.jsonl

    with probe_sandbox(workers=2) as box:
        scored = score(read_samples("s.jsonl", probes), probes, box)

Samples are JSONL rows `{probe_id, completion}` (other fields kept). Each result row
adds `passed`, `result` and the diagnostics: `parses` (prompt + completion compile),
`imports` (no ImportError), `runs` (it ran to the check's own code without raising or
timing out: a wrong answer still `runs`), `api_chains`/`api_valid` (library attribute
chains used and how many exist, see apivalidity) and `isolation`. The summary: n_probes,
pass_rate, api_validity (valid / counted chains over all samples; null when none were
counted), the same per library, and `isolation` (namespaces, or guard where
`unsafe_guard` allowed it; see phi1.engines.sandbox.open_sandbox).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines.sandbox import open_sandbox
from phi1.engines.sandbox import Sandbox
from phi1.io import atomic_file, read_jsonl
from phi1.probe.apivalidity import api_chains
from phi1.probe.suite import Probe
from phi1.probe.xvfb import xvfb

PRELOAD = ("pygame", "tkinter", "tkinter.ttk")
"""Imported once per sandbox worker, so a probe program does not pay for them."""
_LINE = re.compile(r"\(line (\d+): ")


@dataclass
class ProbeScore:
    rows: list[dict]
    """Each sample plus its verdict and diagnostics, in input order."""
    summary: dict
    """n_probes, pass_rate, api_validity, by_library, isolation."""


def read_samples(path: str | Path, probes: Sequence[Probe]) -> list[dict]:
    """Read `{probe_id, completion}` rows; a bad line is a Phi1Error naming it."""
    p = Path(path)
    known = {pr.id for pr in probes}
    out = []
    for lineno, row in read_jsonl(p):
        if not isinstance(row, dict) or not isinstance(row.get("probe_id"), str) \
                or not isinstance(row.get("completion"), str):
            raise Phi1Error(f"{p} line {lineno}: a sample needs a string `probe_id` and a string `completion`")
        if row["probe_id"] not in known:
            raise Phi1Error(f"{p} line {lineno}: unknown probe id {row['probe_id']!r} (see `phi1 probe list`)")
        out.append(row)
    if not out:
        raise Phi1Error(f"{p}: no samples")
    return out


@contextlib.contextmanager
def probe_sandbox(workers: Optional[int] = None, *, unsafe_guard: bool = False,
                  param: Optional[str] = None) -> Iterator[Sandbox]:
    """A private Xvfb display and a sandbox whose GUI policy allows it; both stopped after.
    Fails closed as `open_sandbox` does (`unsafe_guard`, `param`: see there)."""
    with xvfb() as display, open_sandbox(workers, unsafe_guard=unsafe_guard, param=param,
                                         display=display, preload=PRELOAD) as box:
        yield box


def _diagnose(probe: Probe, completion: str, status: str, error: str) -> dict:
    chains = api_chains(probe.prompt, completion, probe.library)
    parses = chains is not None
    passed = status == "passed"
    imports = parses and not re.match(r"(ModuleNotFoundError|ImportError)\b", error)
    # The program is harness + prompt + completion, then the check: an exception whose
    # innermost program line is before the check was raised by the completion's code.
    check_line = probe.program(completion).count("\n") - probe.check.count("\n")
    m = _LINE.search(error)
    in_check = bool(m) and int(m.group(1)) >= check_line
    runs = passed or (parses and status == "failed" and in_check)
    return {
        "parses": parses, "imports": imports, "runs": runs,
        "api_chains": len(chains or []), "api_valid": sum(ok for _, ok in chains or []),
        "api_invalid": [c for c, ok in chains or [] if not ok],
    }


def _rates(rows: Sequence[dict]) -> dict:
    counted = sum(r["api_chains"] for r in rows)
    return {
        "n_probes": len({r["probe_id"] for r in rows}),
        "pass_rate": sum(r["passed"] for r in rows) / len(rows) if rows else 0.0,
        "api_validity": sum(r["api_valid"] for r in rows) / counted if counted else None,
    }


def score(samples: Sequence[dict], probes: Sequence[Probe], sandbox: Sandbox, *, timeout: float = 10.0,
          memory_bytes: int = 2 << 30, progress: Optional[Callable[[int], None]] = None) -> ProbeScore:
    """Run every sample's program in `sandbox` (use `probe_sandbox`) and diagnose it."""
    by_id = {p.id: p for p in probes}
    programs = [by_id[s["probe_id"]].program(s["completion"]) for s in samples]
    results = sandbox.map(programs, timeout=timeout, memory_bytes=memory_bytes, progress=progress)
    rows = []
    for sample, res in zip(samples, results):
        probe = by_id[sample["probe_id"]]
        rows.append({
            **sample, "library": probe.library, "passed": res.passed,
            "result": "passed" if res.passed else f"{res.status}: {res.error}",
            **_diagnose(probe, sample["completion"], res.status, res.error),
            "isolation": sandbox.isolation,
        })
    libraries = sorted({r["library"] for r in rows})
    by_library = {lib: _rates([r for r in rows if r["library"] == lib]) for lib in libraries}
    summary = {**_rates(rows), "by_library": by_library, "isolation": sandbox.isolation}
    return ProbeScore(rows=rows, summary=summary)


def write_results(path: str | Path, rows: Sequence[dict]) -> None:
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def score_file(samples: str | Path, out: str | Path, *, workers: Optional[int] = None, timeout: float = 10.0,
               memory_bytes: int = 2 << 30, unsafe_guard: bool = False) -> dict:
    """`phi1 probe score`: run the samples JSONL headless (Xvfb + sandbox), write the
    verdicts and diagnostics to `out`; return the summary."""
    from phi1.engines.progress import progress_bar
    from phi1.probe.suite import load_suite

    probes = load_suite()
    rows = read_samples(samples, probes)
    with probe_sandbox(workers, unsafe_guard=unsafe_guard) as box, progress_bar(len(rows), "probes: execute") as update:
        scored = score(rows, probes, box, timeout=timeout, memory_bytes=memory_bytes, progress=update)
    write_results(out, scored.rows)
    return scored.summary
