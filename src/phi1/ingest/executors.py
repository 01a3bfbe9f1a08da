"""The datatrove executor that runs ingest's read-and-filter pipeline and its dedup
stages (phi1.ingest.dedup.run_dedup), chosen in params.

    ingest:
      executor: slurm          # local (default) | slurm | ray
      tasks: 500
      workers: 100
      work_dir: /shared/scratch/phi1
      slurm: {partition: cpu, time: "12:00:00", mem_per_cpu_gb: 4}

    run_pipeline(cfg, steps, logging_dir)   # returns once every task has finished

- local: datatrove's LocalPipelineExecutor (quiet: its per-task logs would bury the
  progress bar), `workers` processes on this machine.
- slurm: datatrove's SlurmPipelineExecutor. Its `run()` writes an sbatch script, submits
  a job array and returns at once, so the stage then waits: it polls the completion
  markers datatrove writes (`<logging_dir>/completions/<rank>`) with a progress bar, and
  when the job leaves the queue with tasks unfinished fails naming the job id, the
  failed ranks, the error line of the first failed task and its Slurm log
  (`<logging_dir>/slurm_logs/<job>_<rank>.out`). The logging dir and the pipeline's
  outputs must be on a filesystem the compute nodes share (`ingest.work_dir`, or the
  repo itself). Ctrl-C cancels the job (scancel). Tested against a real single-node
  Slurm (tests/slurm_cluster.py, `make slurm`).
- ray: datatrove's RayPipelineExecutor on the cluster at `ray.address`, or on a local Ray
  instance started (and stopped) here; it runs and waits.

Every executor writes the same per-task stats and completion markers, so the stage
checks completeness and drop counts the same way afterwards (`missing_ranks`,
`phi1.ingest.stage.datatrove_drop_counts`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from datatrove.executor.base import PipelineExecutor
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.executor.slurm import SlurmPipelineExecutor

from phi1.config import IngestConfig
from phi1.errors import Phi1Error


def quiet_datatrove() -> None:
    """Silence datatrove's loguru output (per-task INFO logs, stats tables) so the
    progress bar on stderr stays readable; our metrics carry the counts instead."""
    from loguru import logger

    logger.disable("datatrove")


class QuietExecutor(LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor, quiet in every worker (loguru state is per process)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        quiet_datatrove()
        return super()._run_for_rank(rank, local_rank, node_rank)


class SlurmExecutor(SlurmPipelineExecutor):
    """datatrove's SlurmPipelineExecutor without its stats-merging follow-up job: the
    stage merges the per-task stats itself once it has seen every task finish, and by
    the time such a job ran the stage may have moved or removed the logs folder."""

    def launch_merge_stats(self):
        return None


def slurm_env_command(cfg: IngestConfig) -> str | None:
    """The shell line a Slurm job runs first: the configured one, else activating the
    virtualenv this process runs in (so the job imports the same phi1), else none."""
    if cfg.slurm.env_command:
        return cfg.slurm.env_command
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        return f"source {activate}"
    return None


def build_executor(cfg: IngestConfig, steps: list, logging_dir: Path, tasks: int | None = None) -> PipelineExecutor:
    """The configured datatrove executor over `steps` (`tasks` tasks, default
    `cfg.tasks`); nothing is started or submitted."""
    tasks = tasks or cfg.tasks
    common = dict(tasks=tasks, logging_dir=str(logging_dir), skip_completed=False)
    if cfg.executor == "local":
        return QuietExecutor(steps, workers=min(cfg.workers, tasks), **common)
    if cfg.executor == "slurm":
        s = cfg.slurm
        return SlurmExecutor(
            steps, workers=cfg.workers, time=s.time, partition=s.partition or "", cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos, job_name=s.job_name, env_command=slurm_env_command(cfg),
            sbatch_args=dict(s.sbatch_args), slurm_logs_folder=str(logging_dir / "slurm_logs"), **common,
        )
    from datatrove.executor.ray import RayPipelineExecutor

    r = cfg.ray
    return RayPipelineExecutor(steps, workers=cfg.workers, cpus_per_task=r.cpus_per_task,
                               mem_per_cpu_gb=r.mem_per_cpu_gb, **common)


def missing_ranks(logging_dir: Path, tasks: int) -> list[int]:
    """Tasks without datatrove's completion marker."""
    done = logging_dir / "completions"
    return [r for r in range(tasks) if not (done / f"{r:05d}").is_file()]


def _incomplete_error(executor: str, missing: list[int], tasks: int, logs: Path) -> Phi1Error:
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    return Phi1Error(f"ingest: {len(missing)} of {tasks} {executor} tasks did not complete (ranks {shown}); "
                     f"see the task logs in {logs / 'logs'}")


def run_pipeline(cfg: IngestConfig, steps: list, logging_dir: Path, tasks: int | None = None) -> None:
    """Run `steps` on `tasks` tasks (default `cfg.tasks`) with the configured executor and
    return when all have completed; a task that failed is a Phi1Error naming the logs.
    The dedup stages (phi1.ingest.dedup) are such runs too, one after another."""
    tasks = tasks or cfg.tasks
    if cfg.executor == "slurm":
        _run_slurm(cfg, steps, logging_dir, tasks)
    elif cfg.executor == "ray":
        _run_ray(cfg, steps, logging_dir, tasks)
    else:
        quiet_datatrove()
        build_executor(cfg, steps, logging_dir, tasks).run()
    missing = missing_ranks(logging_dir, tasks)
    if missing:
        raise _incomplete_error(cfg.executor, missing, tasks, logging_dir)


def preflight(cfg: IngestConfig) -> None:
    """Fail early, before any output is touched, when the executor's tools are missing."""
    if cfg.executor == "slurm":
        for tool in ("sbatch", "squeue"):
            _need(tool)
    elif cfg.executor == "ray":
        _import_ray()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise Phi1Error("ingest.executor is ray but the `ray` package is not installed (pip install ray)") from None
    return ray


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise Phi1Error(f"ingest.executor is slurm but `{tool}` is not on PATH; run `phi1 ingest` on a Slurm "
                        "login node, or set ingest.executor to local or ray")
    return path


def _job_queued(job_id: str) -> bool:
    """Whether any task of the job array is still pending or running (squeue lists it)."""
    out = subprocess.run(["squeue", "--noheader", "--format=%i", "--jobs", job_id],
                         capture_output=True, text=True)
    # squeue exits non-zero for a job id it no longer knows: the job has left the queue.
    return out.returncode == 0 and bool(out.stdout.strip())


def slurm_log(logging_dir: Path, job_id: str, rank: int) -> Path:
    """The Slurm output of one array task (datatrove's `--output=<slurm_logs>/%A_%a.out`;
    with skip_completed off, array index = rank)."""
    return logging_dir / "slurm_logs" / f"{job_id}_{rank}.out"


def task_error_line(log: Path) -> str | None:
    """The exception line ending the last Python traceback in a Slurm task log (srun's
    `-l` rank prefix removed), else the last line mentioning an error, else None."""
    try:
        lines = [re.sub(r"^\d+: ", "", ln).rstrip() for ln in log.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    tb = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last):")]
    if tb:
        after = [ln for ln in lines[tb[-1] + 1:] if re.fullmatch(r"[A-Za-z_][\w.]*(: .*)?", ln)]  # pkg.Error: msg
        if after:
            return after[0]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return errors[-1].strip() if errors else None


def _slurm_job_error(job_id: str, missing: list[int], tasks: int, logging_dir: Path) -> Phi1Error:
    shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
    log = slurm_log(logging_dir, job_id, missing[0])
    what = task_error_line(log) or ("the task never started" if not log.exists() else "no error line in its log")
    others = f" (the other ranks' beside it, {job_id}_<rank>.out)" if len(missing) > 1 else ""
    return Phi1Error(f"ingest: Slurm job {job_id}: {len(missing)} of {tasks} tasks failed (ranks {shown}); "
                     f"rank {missing[0]}: {what}; Slurm log: {log}{others}")


def _run_slurm(cfg: IngestConfig, steps: list, logging_dir: Path, tasks: int) -> None:
    from phi1.engines.progress import progress_bar

    preflight(cfg)
    executor = build_executor(cfg, steps, logging_dir, tasks)
    try:
        executor.run()  # writes the sbatch script and submits the array; returns the job id in .job_id
    except subprocess.CalledProcessError as exc:
        raise Phi1Error(f"ingest: sbatch failed (exit {exc.returncode}); see {logging_dir / 'launch_script.slurm'}") from None
    job_id = str(executor.job_id)
    try:
        with progress_bar(tasks, f"ingest slurm job {job_id}") as update:
            while True:
                missing = missing_ranks(logging_dir, tasks)
                update(tasks - len(missing))
                if not missing:
                    return
                if not _job_queued(job_id):
                    # Markers are written before a task exits; one last look for a task that just finished.
                    missing = missing_ranks(logging_dir, tasks)
                    if missing:
                        raise _slurm_job_error(job_id, missing, tasks, logging_dir)
                    return
                time.sleep(cfg.slurm.poll_seconds)
    except KeyboardInterrupt:
        subprocess.run(["scancel", job_id], capture_output=True)
        raise


def _run_ray(cfg: IngestConfig, steps: list, logging_dir: Path, tasks: int) -> None:
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kw = {"address": cfg.ray.address} if cfg.ray.address else {"num_cpus": cfg.ray.num_cpus}
        try:
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise Phi1Error(f"ingest: cannot start or join Ray at {cfg.ray.address or 'a local instance'}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        started = True
    try:
        build_executor(cfg, steps, logging_dir, tasks).run()
    finally:
        if started:
            ray.shutdown()


__all__ = ["build_executor", "run_pipeline", "preflight", "missing_ranks", "QuietExecutor", "SlurmExecutor", "quiet_datatrove",
           "slurm_env_command", "slurm_log", "task_error_line"]
