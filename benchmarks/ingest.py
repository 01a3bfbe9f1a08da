"""Benchmark: ingest + dedup of the default corpus (the running interpreter's stdlib).

    python benchmarks/ingest.py                    # tasks=1
    python benchmarks/ingest.py --tasks 2 --workers 2

Prints files/s and MB/s of the whole stage (listing, datatrove read+filter pipeline,
global exact + MinHash dedup, parquet shards; MLflow left out), against two baselines
measured in the same run on the same file list: a plain read of every file, and
read + ast.parse (the floor for any stage that checks Python syntax). CPU seconds
(this process and its workers) are printed too, because wall time on a shared machine
depends on the neighbours.
"""

from __future__ import annotations

import argparse
import ast
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

from phi1.config import IngestConfig
from phi1.ingest.stage import execute, plan_sources


def cpu_seconds() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> tuple[float, float]:
    gc.collect()
    w, c = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - w, cpu_seconds() - c


def plain_read(files: list[str]) -> None:
    for f in files:
        try:
            with open(f, "rb") as fh:
                fh.read()
        except OSError:
            pass


def read_and_parse(files: list[str]) -> None:
    for f in files:
        try:
            with open(f, "rb") as fh:
                ast.parse(fh.read())
        except (OSError, SyntaxError, ValueError):
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    cfg = IngestConfig(tasks=args.tasks, workers=args.workers)
    plans = plan_sources(cfg)
    files = [a for p in plans for _, a in p.files]
    size = sum(Path(f).stat().st_size for f in files if Path(f).is_file())
    mb = size / 1e6

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw"
        out.mkdir()
        holder = {}
        results["ingest"] = timed(lambda: holder.update(r=execute(cfg, plans, out)))
        _, rows = holder["r"]
    results["plain read"] = timed(lambda: plain_read(files))
    results["read + ast.parse"] = timed(lambda: read_and_parse(files))

    print(f"python {sys.version.split()[0]}, {len(files)} files, {mb:.1f} MB, tasks={args.tasks} "
          f"workers={args.workers}, kept {len(rows)}")
    ingest_wall = results["ingest"][0]
    for name, (wall, cpu) in results.items():
        # pool workers are forked by datatrove's forkserver, not by us: their CPU time is not
        # in RUSAGE_CHILDREN, so it is only reported for the in-process run (workers=1)
        shown = f"{cpu:7.2f}" if name != "ingest" or args.workers == 1 else "    n/a"
        print(f"{name:18s} {wall:7.2f} s wall {shown} s cpu  {len(files) / wall:8.0f} files/s "
              f"{mb / wall:7.2f} MB/s  ingest/this wall ratio {ingest_wall / wall:6.1f}x")


if __name__ == "__main__":
    main()
