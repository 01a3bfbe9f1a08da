"""`phi1 ingest` with `ingest.executor=slurm` on a real single-node Slurm cluster (munged,
slurmctld, slurmd from Debian slurm-wlm + munge; tests/slurm_cluster.py), started once
per session as root and torn down after. The stage submits datatrove's job array with
the real sbatch, waits with the real squeue, and the tasks run as Slurm jobs."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import IngestConfig, SlurmExecutorConfig, SourceConfig
from phi1.errors import Phi1Error
from phi1.ingest.stage import execute, plan_sources

from tests.conftest import REPO
from tests.slurm_cluster import PARTITION, SlurmCluster, alive  # the `slurm` fixture: tests/ingest/conftest.py

pytestmark = pytest.mark.cluster

PHI1 = Path(sys.executable).with_name("phi1")


def _ingest(workdir: Path, sources: list[dict], *overrides: str, out: str = "data/raw",
            metrics: str = "metrics/ingest.json") -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(yaml.safe_dump({"ingest": {"sources": sources, "min_chars": 100}}))
    sets = [a for o in overrides for a in ("-S", o)]
    return subprocess.run([str(PHI1), "ingest", "--params", "params.yaml", *sets, "--out", out, "--metrics", metrics],
                          cwd=workdir, capture_output=True, text=True, timeout=300)


def _slurm_sets(job_name: str, tasks: int = 2) -> list[str]:
    return ["ingest.executor=slurm", f"ingest.slurm.partition={PARTITION}", f"ingest.slurm.job_name={job_name}",
            f"ingest.tasks={tasks}", f"ingest.workers={tasks}", "ingest.slurm.poll_seconds=0.5",
            "ingest.slurm.mem_per_cpu_gb=1"]


def _hashes(*paths: Path) -> dict[str, str]:
    out = {}
    for p in paths:
        for f in sorted([p] if p.is_file() else p.rglob("*")):
            if f.is_file():
                name = f"{p.name}/{f.relative_to(p)}" if p.is_dir() else p.name
                out[name] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _jobs(cluster: SlurmCluster, name: str) -> list[dict[str, str]]:
    """Every job (array task) of that name the controller still knows, as scontrol's fields."""
    out = cluster.client("scontrol", "--oneliner", "show", "job")
    assert out.returncode == 0, out.stderr
    jobs = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in out.stdout.splitlines()]
    return [j for j in jobs if j.get("JobName") == name]


def test_ingest_on_slurm_equals_local(slurm, workdir, small_corpus, bad_source):
    sources = [{"name": "corpus", "kind": "local", "paths": [str(small_corpus)]},
               {"name": "bad", "kind": "local", "paths": [str(bad_source)]}]
    proc = _ingest(workdir, sources, *_slurm_sets("phi1-test-equal"), out="slurm/raw", metrics="slurm/ingest.json")
    assert proc.returncode == 0, proc.stderr
    # the same params.yaml, the local executor, in this process
    local = CliRunner().invoke(app, ["ingest", "--params", "params.yaml", "-S", "ingest.tasks=2", "-S",
                                     "ingest.workers=2", "--out", "local/raw", "--metrics", "local/ingest.json"])
    assert local.exit_code == 0, local.output
    got, want = _hashes(workdir / "slurm/raw", workdir / "slurm/ingest.json"), \
        _hashes(workdir / "local/raw", workdir / "local/ingest.json")
    assert got == want and "raw/manifest.json" in got and "raw/part-00000.parquet" in got
    # The two tasks ran as one Slurm job array that completed (no stats-merging job besides),
    # then the dedup stages (phi1.ingest.dedup) as one array each: exact 2, buckets 2, cluster 1.
    jobs = _jobs(slurm, "phi1-test-equal")
    arrays: dict[int, list] = {}
    for j in jobs:
        arrays.setdefault(int(j["ArrayJobId"]), []).append((j["ArrayTaskId"], j["JobState"], j["ExitCode"]))
    two = [("0", "COMPLETED", "0:0"), ("1", "COMPLETED", "0:0")]
    assert [sorted(v) for _, v in sorted(arrays.items())] == [two, two, two, two[:1]]
    assert all(j["Partition"] == PARTITION for j in jobs)
    assert not (workdir / "slurm" / ".ingest-work").exists()  # the work folder goes on success


def test_a_failed_slurm_task_names_the_job_and_its_log(slurm, workdir, small_corpus):
    broken = workdir / "broken"
    broken.mkdir()
    (broken / "broken.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")  # task 0 reads it and raises
    sources = [{"name": "corpus", "kind": "local", "paths": [str(small_corpus)]},
               {"name": "broken", "kind": "parquet", "paths": [str(broken)]}]
    proc = _ingest(workdir, sources, *_slurm_sets("phi1-test-fail"))
    assert proc.returncode == 2, proc.stderr
    (job,) = {j["ArrayJobId"] for j in _jobs(slurm, "phi1-test-fail")}
    (work,) = (workdir / "data" / ".ingest-work").iterdir()  # kept for its logs
    log = work / "logs" / "slurm_logs" / f"{job}_0.out"
    assert re.fullmatch(  # the error line of the task's traceback, pyarrow's reason in the parentheses
        re.escape(f"error: ingest: Slurm job {job}: 1 of 2 tasks failed (ranks 0); rank 0: phi1.errors.Phi1Error: "
                  "ingest source 'broken': broken.parquet is not a parquet file (") + r".+" + re.escape(
            f"); Slurm log: {log}"), proc.stderr.strip().splitlines()[-1])
    assert "Traceback" in log.read_text()
    states = {j["ArrayTaskId"]: (j["JobState"], j["ExitCode"]) for j in _jobs(slurm, "phi1-test-fail")}
    assert states == {"0": ("FAILED", "1:0"), "1": ("COMPLETED", "0:0")}
    assert not (workdir / "data" / "raw").exists() and not (workdir / "metrics").exists()


def test_sbatch_refusing_the_job_is_a_clear_error(slurm, tmp_path, small_corpus, capfd):
    cfg = IngestConfig(sources=(SourceConfig(name="corpus", paths=(str(small_corpus),)),), executor="slurm",
                       tasks=2, work_dir=str(tmp_path / "shared"),
                       slurm=SlurmExecutorConfig(partition="nosuchpartition", job_name="phi1-test-refused"))
    (tmp_path / "out").mkdir()
    with pytest.raises(Phi1Error) as info:
        execute(cfg, plan_sources(cfg), tmp_path / "out")
    (work,) = (tmp_path / "shared").iterdir()
    assert str(info.value) == f"ingest: sbatch failed (exit 1); see {work / 'logs' / 'launch_script.slurm'}"
    assert "sbatch: error: invalid partition specified: nosuchpartition" in capfd.readouterr().err  # sbatch's own
    assert _jobs(slurm, "phi1-test-refused") == []


def test_make_slurm_starts_and_stops_a_cluster_leaving_nothing(tmp_path):
    """What `make slurm` / `make slurm-down` run (the system python3, stdlib only): up
    leaves an idle node, down leaves no daemon running and no state behind."""
    script, state = REPO / "tests" / "slurm_cluster.py", tmp_path / "s"
    up = subprocess.run(["python3", str(script), "up", "--state", str(state)], capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stderr
    assert f"export SLURM_CONF={state / 'slurm.conf'}" in up.stdout
    cluster = SlurmCluster(state)
    pids = {d: cluster.pid(d) for d in ("munged", "slurmctld", "slurmd")}
    assert all(pids.values()) and cluster.client("sinfo", "--noheader", "--format=%t").stdout.strip() == "idle"
    again = subprocess.run(["python3", str(script), "up", "--state", str(state)], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 1 and f"error: {state} is not empty" in again.stderr
    down = subprocess.run(["python3", str(script), "down", "--state", str(state)], capture_output=True, text=True,
                          timeout=120)
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert not [d for d, pid in pids.items() if alive(pid)]
