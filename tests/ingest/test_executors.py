"""The ingest stage's datatrove executors: local, Slurm and Ray.

Here the Slurm executor is built and its sbatch script checked without submitting; the
submit-and-wait path runs on a real single-node Slurm cluster in test_slurm.py (marked
`cluster`). Ray runs for real on a local 2-CPU instance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import IngestConfig, RayExecutorConfig, SlurmExecutorConfig, SourceConfig, load_stage_config
from phi1.errors import Phi1Error
from phi1.ingest.executors import QuietExecutor, SlurmExecutor, build_executor, slurm_env_command
from phi1.ingest.stage import execute, plan_sources
from phi1.io import read_table

SLURM = SlurmExecutorConfig(partition="cpu", time="02:00:00", cpus_per_task=2, mem_per_cpu_gb=3, qos="high",
                            job_name="phi1-test", env_command="source /shared/venv/bin/activate",
                            sbatch_args={"account": "proj"}, poll_seconds=0.2)


def _cfg(corpus: Path, **kw) -> IngestConfig:
    return IngestConfig(sources=(SourceConfig(name="corpus", paths=(str(corpus),)),), **kw)


def _execute(cfg: IngestConfig, out: Path):
    out.mkdir(parents=True)
    return execute(cfg, plan_sources(cfg), out)


def test_local_executor_is_the_default(tmp_path, small_corpus):
    ex = build_executor(_cfg(small_corpus, tasks=3, workers=5), [], tmp_path / "logs")
    assert type(ex) is QuietExecutor
    assert (ex.tasks, ex.workers, ex.skip_completed) == (3, 3, False)


def test_slurm_executor_is_built_with_the_configured_settings(tmp_path, small_corpus):
    cfg = _cfg(small_corpus, executor="slurm", tasks=50, workers=10, slurm=SLURM)
    ex = build_executor(cfg, [], tmp_path / "logs")
    assert isinstance(ex, SlurmExecutor)
    assert (ex.tasks, ex.workers, ex.partition, ex.time, ex.cpus_per_task, ex.mem_per_cpu_gb, ex.qos, ex.job_name) == (
        50, 10, "cpu", "02:00:00", 2, 3, "high", "phi1-test")
    script = ex.get_launch_file_contents(ex.get_sbatch_args(max_array=50), "launch_pickled_pipeline x")
    for line in ("#SBATCH --partition=cpu", "#SBATCH --time=02:00:00", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --mem-per-cpu=3G", "#SBATCH --qos=high", "#SBATCH --job-name=phi1-test",
                 "#SBATCH --account=proj", "#SBATCH --array=0-49%10", "source /shared/venv/bin/activate"):
        assert line in script
    assert str(tmp_path / "logs" / "slurm_logs") in script  # slurm's own logs next to datatrove's


def test_slurm_job_activates_this_virtualenv_by_default(small_corpus):
    cfg = _cfg(small_corpus, executor="slurm", slurm=SlurmExecutorConfig(partition="cpu"))
    expected = f"source {Path(sys.prefix) / 'bin' / 'activate'}" if sys.prefix != sys.base_prefix else None
    assert slurm_env_command(cfg) == expected


def test_slurm_needs_a_partition(small_corpus):
    with pytest.raises(Phi1Error, match="ingest.slurm.partition: required with ingest.executor slurm"):
        _cfg(small_corpus, executor="slurm")


def test_executor_settings_load_from_params(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("ingest:\n  executor: ray\n  ray: {num_cpus: 2, mem_per_cpu_gb: 0.5}\n  slurm: {partition: gpu}\n")
    cfg = load_stage_config("ingest", p, ["ingest.slurm.sbatch_args={account: x}"])
    assert cfg.ray == RayExecutorConfig(num_cpus=2, mem_per_cpu_gb=0.5)
    assert cfg.slurm.partition == "gpu" and cfg.slurm.sbatch_args == {"account": "x"}
    with pytest.raises(Phi1Error, match="ingest.executor: 'dask' is not one of"):
        load_stage_config("ingest", p, ["ingest.executor=dask"])
    with pytest.raises(Phi1Error, match=r"ingest.slurm.partitio: unknown key"):
        load_stage_config("ingest", p, ["ingest.slurm.partitio=x"])


def test_missing_sbatch_is_a_one_line_error_and_writes_nothing(tmp_path, small_corpus, monkeypatch):
    workdir = tmp_path
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PATH", str(workdir / "empty-bin"))
    params = workdir / "params.yaml"
    params.write_text(json.dumps({"ingest": {"executor": "slurm", "slurm": {"partition": "cpu"},
                                             "sources": [{"name": "c", "paths": [str(small_corpus)]}]}}))
    result = CliRunner().invoke(app, ["ingest", "-p", str(params), "--out", "data/raw", "--metrics", "m.json"])
    assert result.exit_code == 2
    msg = result.output.strip()
    assert msg == ("error: ingest.executor is slurm but `sbatch` is not on PATH; run `phi1 ingest` on a Slurm "
                   "login node, or set ingest.executor to local or ray")
    assert not (workdir / "data").exists() and not (workdir / "m.json").exists()


# --------------------------------------------------------------------------- Ray


@pytest.mark.long  # ~25 s (a Ray instance starts): make test-cluster runs it with the other scale-out engines
def test_ray_executor_on_a_local_instance_equals_local(tmp_path, small_corpus):
    import ray  # a dev dependency: missing, the test fails rather than skips

    local = _execute(_cfg(small_corpus, tasks=2, workers=2), tmp_path / "local")
    cfg = _cfg(small_corpus, executor="ray", tasks=2, workers=2,
               ray=RayExecutorConfig(num_cpus=2, mem_per_cpu_gb=0.25))
    got = _execute(cfg, tmp_path / "ray")
    assert not ray.is_initialized()  # the instance the stage started is stopped again
    assert read_table(tmp_path / "local").equals(read_table(tmp_path / "ray"))
    assert local == got
