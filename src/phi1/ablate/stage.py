"""`run()`: queue the plan, wait for it, collect, write the results and log them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from phi1.ablate.plan import DEFAULT_EXPERIMENT, DEFAULT_MAX_TOKENS, DEFAULT_TARGET, plan, tracking_env
from phi1.ablate.queue import Dvc, Progress, check_repo, enqueue, failure_log, untracked_files, wait, workers_gone
from phi1.ablate.report import create_experiment, log_summary, write_results
from phi1.ablate.results import Ablation, collect, experiments, params
from phi1.errors import Phi1Error


def run(variants: Sequence[str] | None = None, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS,
        overrides: Sequence[str] = (), target: str = DEFAULT_TARGET, jobs: int = 1, seeds: Sequence[int] | None = None,
        experiment: str = DEFAULT_EXPERIMENT, out: str | Path = "reports/ablation", repo: str | Path = ".",
        collect_only: bool = False, baseline: str = "HEAD", poll: float = 10.0, timeout: Optional[float] = None,
        progress: Optional[Progress] = None, warn: Callable[[str], None] = lambda m: None) -> Ablation:
    """Queue, run and wait for the variants (unless `collect_only`), then collect their
    metrics, write `out`/results.{json,csv} + figure.png and log them to MLflow. The exps
    branch off `baseline` (HEAD when it starts; another commit only with `collect_only`)."""
    repo = Path(repo)
    if jobs < 1:
        raise Phi1Error("--jobs must be >= 1")
    the_plan = plan(variants, max_tokens, overrides, seeds)
    if baseline != "HEAD" and not collect_only:
        raise Phi1Error("--baseline is for --collect-only: new experiments branch off HEAD")
    rev = check_repo(repo, baseline)
    env = tracking_env(repo, experiment)
    dvc = Dvc(repo, env, baseline=rev)
    result = Ablation(plan=the_plan)
    t0 = time.monotonic()
    if not collect_only:
        if not workers_gone(repo):
            raise Phi1Error("a DVC queue worker is already running here, and its environment (not this command's "
                            "tracking URI) would reach the stages; wait for `dvc queue status` to show none, or `dvc queue stop`")
        missing = untracked_files(repo)
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            warn(f"queued experiments leave out untracked files ({shown}); `git add` any a stage needs")
        create_experiment(env, repo)
        enqueue(dvc, the_plan, target)
        dvc.start_queue(jobs)
        result.states = wait(dvc, list(the_plan), progress or (lambda s, st: None), poll=poll, timeout=timeout,
                             jobs=jobs, warn=warn)
        for name in result.failed:
            warn(f"variant {name} failed; `dvc queue logs {name}`:\n{failure_log(dvc, name)}")
    show = dvc.show()
    exps = experiments(show)
    if collect_only:
        result.states = {n: exps.get(n, {}).get("state", "missing") for n in the_plan}
    result.rows = collect(show, list(the_plan))
    result.seconds = round(time.monotonic() - t0, 1)
    if not result.rows:
        hint = " (they branch off the commit they started from: --baseline REV)" if collect_only else ""
        raise Phi1Error(f"no finished ablation experiment of {rev[:7]} to collect "
                        f"({', '.join(f'{n}: {s}' for n, s in result.states.items())}){hint}")
    meta = {"experiment": experiment, "baseline": rev, "target": target, "max_tokens": max_tokens, "overrides": list(overrides),
            "seeds": None if seeds is None else list(seeds),
            "seconds": result.seconds, "collect_only": collect_only,
            # what each exp really ran with (with --collect-only the options above may differ)
            "tokenize_params": {n: params(exps[n]["data"]).get("tokenize") for n in the_plan if n in exps}}
    result.out = Path(out)
    write_results(result.out, result, meta)
    log_summary(result.out, result, meta, env, repo)
    return result
