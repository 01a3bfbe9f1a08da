"""Running the plan in DVC's experiment queue: one `dvc exp run --queue --name <exp>
-S ...` per exp, `dvc queue start`, and polling until each succeeded or failed.

`dvc queue start` runs them in temp copies of the repo (`.dvc/tmp/exps/`, a clone of
HEAD plus the tracked changes: commit new files first); stages whose deps and params did
not change (ingest ... validate) come from the DVC cache, so each variant runs tokenize
-> evaluate. A rerun removes the exps of the same names first.

Queueing and starting stay `dvc` CLI calls: `dvc.api` has neither (only `exp_save` and
`exp_show`), and the worker `dvc queue start` spawns must inherit exactly the
environment `plan.tracking_env` builds (a subprocess gets it as `env=`; in-process we
would have to rewrite our own os.environ around DVC's daemon spawn). Polling reads the
records through `results.show` (in-process, bounded by a timeout: `Dvc.show`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from phi1.ablate.results import experiments, show
from phi1.errors import Phi1Error

TERMINAL = {"success", "failed"}
Progress = Callable[[dict[str, str], dict[str, Optional[str]]], None]


class Dvc:
    """The `dvc` CLI in one repo with one environment, and the exps of one baseline."""

    def __init__(self, repo: Path, env: dict[str, str], baseline: Optional[str] = None):
        self.repo, self.env, self.baseline = repo, env, baseline
        self.exe = str(Path(sys.executable).parent / "dvc")
        if not Path(self.exe).exists():
            self.exe = "dvc"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([self.exe, *args], cwd=self.repo, env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            msg = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise Phi1Error(f"`dvc {' '.join(args[:3])}` failed in {self.repo}: {msg[-1] if msg else done.returncode}")
        return done

    def start_queue(self, jobs: int) -> None:
        """`dvc queue start`, output to a file: the worker it spawns inherits its stdout and
        stderr, and with pipes we would wait for the whole queue instead of polling it."""
        with tempfile.TemporaryFile("w+") as log:
            code = subprocess.run([self.exe, "queue", "start", "--jobs", str(jobs)], cwd=self.repo, env=self.env,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            if code != 0:
                log.seek(0)
                lines = log.read().strip().splitlines()
                raise Phi1Error(f"`dvc queue start` failed in {self.repo}: {lines[-1] if lines else code}")

    def show(self, timeout: Optional[float] = None) -> list[dict]:
        """The baseline commit's exps (`results.show`). With `timeout`, a read that takes
        longer is abandoned as a Phi1Error: reading a running exp races with it finishing,
        and when its temp dir vanishes mid-read, pygit2's blob reader can wait forever
        (seen with two exps at once). So the read runs in a daemon thread, left behind if
        it hangs (it holds no lock of ours, and a daemon thread does not block exit)."""
        if timeout is None:
            return show(self.repo, self.baseline)
        box: dict = {}

        def read() -> None:
            try:
                box["show"] = show(self.repo, self.baseline)
            except Phi1Error as exc:
                box["error"] = exc

        reader = threading.Thread(target=read, name="dvc-exp-show", daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            raise Phi1Error(f"reading the DVC experiments of {self.repo} took over {timeout:.0f} s")
        if "error" in box:
            raise box["error"]
        return box["show"]


def current_stage(log: Optional[str]) -> Optional[str]:
    """The stage an exp runs now, from its queue log (`Running stage 'x':`)."""
    if not log or not Path(log).is_file():
        return None
    found = re.findall(r"Running stage '([^']+)'", Path(log).read_text(errors="replace"))
    return found[-1] if found else None


def untracked_files(repo: Path) -> list[str]:
    done = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=repo,
                          capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else []


def check_repo(repo: Path, baseline: str = "HEAD") -> str:
    """The full commit id of `baseline` in a DVC repo, or a Phi1Error saying what is wrong."""
    if not (repo / ".dvc").is_dir() or not (repo / "dvc.yaml").is_file():
        raise Phi1Error(f"{repo.resolve()} is not a DVC repository with a dvc.yaml (run phi1 ablate from the repo root)")
    head = subprocess.run(["git", "rev-parse", "--verify", f"{baseline}^{{commit}}"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        if baseline == "HEAD":
            raise Phi1Error(f"{repo.resolve()}: no git commit yet; DVC experiments branch off a commit (git commit first)")
        raise Phi1Error(f"--baseline {baseline!r} is not a commit of {repo.resolve()}")
    return head.stdout.strip()


def workers_running(repo: Path) -> int:
    """Live DVC queue workers of this repo, from dvc-task's process files
    (.dvc/tmp/exps/celery/dvc-exp-worker-N.json: pid, returncode null while running).
    Not `dvc queue status`: it pings the workers through celery's file broker, and that
    races with a busy worker, which dies on a half-written message (kombu's JSONDecodeError;
    treeverse/dvc-task#73), leaving the rest of the queue unrun."""
    alive = 0
    for f in (repo / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        try:
            info = json.loads(f.read_text())
            if info.get("returncode") is None and info.get("pid"):
                os.kill(int(info["pid"]), 0)
                alive += 1
        except (OSError, ValueError):
            continue
    return alive


def workers_gone(repo: Path, grace: float = 30.0, poll: float = 1.0) -> bool:
    """Whether no queue worker runs here, given `grace` seconds to stop: DVC stops an idle
    worker 10 s after its queue empties, so one is still there right after an ablation
    (dvc/repo/experiments/queue/celery.py, TemporaryWorker timeout)."""
    deadline = time.monotonic() + grace
    while workers_running(repo):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def enqueue(dvc: Dvc, the_plan: dict[str, list[str]], target: str) -> None:
    """Queue one exp per variant, first removing an exp of that name (queued, failed or
    done) so a rerun replaces it (`--force` would also rerun every upstream stage)."""
    existing = [n for n in experiments(dvc.show()) if n in the_plan]
    if existing:
        dvc("exp", "remove", *existing)
    for name, sets in the_plan.items():
        # --allow-missing: the temp clone lacks the `cache: false` outputs that git ignores
        # (plots/, reports/ here: in neither git nor the DVC cache), and DVC would rerun
        # their unchanged stages (filter, decontaminate, validate) in every variant.
        # (`--copy-paths` cannot help: DVC copies a file only into an existing folder.)
        args = ["exp", "run", "--queue", "--allow-missing", "--name", name]
        for s in sets:
            args += ["-S", s]
        dvc(*args, *target.split(","))  # `evaluate,probe`: both stages


def wait(dvc: Dvc, names: Sequence[str], progress: Progress, poll: float = 10.0, timeout: Optional[float] = None,
         jobs: int = 1, warn: Callable[[str], None] = lambda m: None, read_timeout: float = 30.0) -> dict[str, str]:
    """Poll the exps until every named exp succeeded or failed; return their states.
    A worker that died with exps still queued is replaced (twice at most); a read of the
    exps that fails or hangs past `read_timeout` is retried (five times in a row at most)."""
    start, idle, errors, restarts = time.monotonic(), 0, 0, 0
    while True:
        try:
            exps = experiments(dvc.show(timeout=read_timeout))
            errors = 0
        except Phi1Error:
            # reading races with an exp finishing (its temp dir vanishes mid-read); retry
            errors += 1
            if errors >= 5:
                raise
            time.sleep(poll)
            continue
        states = {n: exps.get(n, {}).get("state", "missing") for n in names}
        stages = {n: current_stage(exps.get(n, {}).get("log")) if states[n] == "running" else None for n in names}
        progress(states, stages)
        if all(s in TERMINAL for s in states.values()):
            return states
        if "running" not in states.values():
            idle = idle + 1 if workers_running(dvc.repo) == 0 else 0
            if idle >= 2:  # nothing runs and no worker will pick the rest up
                left = ", ".join(n for n, s in states.items() if s not in TERMINAL)
                if restarts >= 2:
                    raise Phi1Error(f"the DVC queue stopped with {left} not run; `dvc queue status`, then `dvc queue start`")
                warn(f"the DVC queue worker stopped with {left} still queued; starting a new one")
                dvc.start_queue(jobs)
                restarts, idle = restarts + 1, 0
        if timeout is not None and time.monotonic() - start > timeout:
            raise Phi1Error(f"ablation not finished after {timeout:.0f} s; it keeps running (`dvc queue status`, `dvc queue kill`)")
        time.sleep(poll)


def failure_log(dvc: Dvc, name: str, lines: int = 25) -> str:
    """The last lines of a failed exp's `dvc queue logs`."""
    done = dvc("queue", "logs", name, check=False)
    return "\n".join((done.stdout + done.stderr).rstrip().splitlines()[-lines:])
