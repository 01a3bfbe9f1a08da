"""Benchmark: time and peak memory of every curation stage, as `dvc repro` runs them.

    python benchmarks/curation_scaling.py --project /tmp/sp100 --preset site-packages --fraction 1.0
    python benchmarks/curation_scaling.py --project /tmp/std                       # the default (stdlib)

Makes --project a clone of this repository (unless it already is one), applies the preset
(`phi1 preset use`), keeps the first --fraction of the corpus by file count (each source's
`limit`; listings are sorted, so the same files every run) and runs the curation stages
one by one with `dvc repro -s -f <stage>`. The whole process tree of each stage (dvc,
phi1, datatrove's and the sandbox's workers) is sampled every 0.25 s with psutil: peak
RSS is the largest sum over the tree (and the largest single process is kept too); CPU s is what wait4 reports for the stage and the
descendants it reaped, or the sum of each process's last reading if that is larger.
Prints a table in files/s and ms per kept file, and writes it as JSON to --json. Wall
time on a shared machine depends on the neighbours: read CPU s alongside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "annotate", "embed", "filter", "synthesize", "decontaminate", "validate", "tokenize")


class TreeSampler:
    """Peak summed RSS and CPU seconds of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.25):
        self.root, self.every = psutil.Process(pid), every
        self.peak_rss, self.cpu, self.peak_procs = 0, {}, 0
        self.peak_one = 0  # the largest single process (ingest: the dedup coordinator)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for p in procs:
                try:
                    one = p.memory_info().rss
                    rss += one
                    self.peak_one = max(self.peak_one, one)
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system  # own time only: children are in the tree
                except psutil.NoSuchProcess:
                    continue
            self.peak_rss, self.peak_procs = max(self.peak_rss, rss), max(self.peak_procs, len(procs))
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def prepare(project: Path, preset: str | None, fraction: float) -> None:
    if not (project / "dvc.yaml").exists():
        subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    venv = project / ".venv"
    if not venv.exists():
        venv.symlink_to(REPO / ".venv")  # the site-packages preset reads `.venv` relative to the project
    if preset:
        subprocess.run(["phi1", "preset", "use", preset], cwd=project, check=True, stdout=subprocess.DEVNULL)
    if fraction < 1.0:
        params = yaml.safe_load((project / "params.yaml").read_text())
        for src in params["ingest"]["sources"]:
            total = count_files(project, src)
            src["limit"] = max(1, round(total * fraction))
            print(f"{src['name']}: the first {src['limit']} of {total} files", flush=True)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def count_files(project: Path, src: dict) -> int:
    """How many files the source lists, from the ingest stage's own planner."""
    from phi1.config import IngestConfig, from_dict
    from phi1.ingest.stage import plan_sources

    cwd = os.getcwd()
    os.chdir(project)
    try:
        params = yaml.safe_load((project / "params.yaml").read_text())["ingest"]
        cfg = from_dict(IngestConfig, {**params, "sources": [{**src, "limit": None}]}, "ingest")
        return sum(len(p.files) for p in plan_sources(cfg))
    finally:
        os.chdir(cwd)


def run_stage(project: Path, stage: str, log) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", "-s", "-f", "--no-run-cache", stage], cwd=project,
                            stdout=log, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)  # usage: the stage and every descendant it waited for
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    sampler.stop()
    if rc:
        sys.exit(f"stage {stage} failed (exit {rc}); its output is in {log.name}")
    return {"stage": stage, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(max(usage.ru_utime + usage.ru_stime, sum(sampler.cpu.values())), 1),
            "peak_rss_mb": round(sampler.peak_rss / 2**20), "largest_process_mb": round(sampler.peak_one / 2**20),
            "peak_processes": sampler.peak_procs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True, help="scratch project dir (cloned if missing)")
    ap.add_argument("--preset", default=None, help="a pipelines/ preset, e.g. site-packages (default: the embedded stdlib)")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of each source's files, by count")
    ap.add_argument("--stages", nargs="+", default=list(STAGES))
    ap.add_argument("--json", type=Path, default=None, help="write the table here as JSON")
    args = ap.parse_args()
    project = args.project.resolve()
    prepare(project, args.preset, args.fraction)
    rows = []
    with open(project / "curation_scaling.log", "a") as log:
        for stage in args.stages:
            print(f"{stage} ...", flush=True)
            rows.append(run_stage(project, stage, log))
            r = rows[-1]
            print(f"  {r['wall_s']:8.1f} s wall {r['cpu_s']:8.1f} CPU s {r['peak_rss_mb']:6d} MB peak", flush=True)
    ingest = json.loads((project / "metrics" / "ingest.json").read_text())
    kept, files = ingest["n_kept"], ingest["n_read"]
    total_wall = sum(r["wall_s"] for r in rows)
    summary = {"preset": args.preset or "default", "fraction": args.fraction, "files": files, "kept": kept,
               "stages": rows, "total_wall_s": round(total_wall, 1),
               "total_cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
               "max_peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}
    print(f"\n{'stage':<14}{'wall s':>9}{'CPU s':>9}{'peak MB':>9}{'ms/file':>9}")
    for r in rows:
        per = f"{1000 * r['wall_s'] / files:9.1f}" if files else f"{'':>9}"
        print(f"{r['stage']:<14}{r['wall_s']:9.1f}{r['cpu_s']:9.1f}{r['peak_rss_mb']:9d}{per}")
    print(f"{'total':<14}{total_wall:9.1f}{summary['total_cpu_s']:9.1f}{summary['max_peak_rss_mb']:9d}")
    print(f"files {files}, kept {kept}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
