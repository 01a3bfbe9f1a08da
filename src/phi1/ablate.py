"""`phi1 ablate`: the paper's data-quality ablation (Figure 2.1) as DVC experiments.

    dvc repro                                # once: the shared upstream stages, cached
    phi1 ablate                              # 3 variants x {base, phi1}; ~10-15 min on 2 CPUs
    phi1 ablate --variants unfiltered,filtered+textbook --max-tokens 1000000 -S pretrain.seed=7
    phi1 ablate --seeds 1234,1,2             # each variant x 3 training seeds: mean +- sd, noise test
    phi1 ablate --collect-only               # redraw results/figure from the finished exps
    phi1 ablate --collect-only --baseline REV   # ... after a commit moved HEAD off their baseline
    dvc exp show --only-changed              # the DVC records
    phi1 compare --experiment phi1-ablation --stage evaluate

Each variant is one `dvc exp run --queue --name <variant> -S ...` over the same pipeline;
only params differ (the variant's `tokenize.pretrain_inputs`, one `tokenize.max_tokens`
for all, and the user's `-S` for all). `dvc queue start` runs them in temp copies of
the repo (`.dvc/tmp/exps/`, a clone of HEAD plus the tracked changes: commit new files
first); stages whose deps and params did not change (ingest ... validate) come from the
DVC cache, so each variant runs tokenize -> evaluate. Every experiment produces both
checkpoints (pretrained `base`, CodeExercises-finetuned `phi1`), so three experiments
give the paper's six bars. A rerun removes the exps of the same names first.

Seed repeats (`--seeds`): each variant runs once per training seed (`pretrain.seed` and
`finetune.seed`; the data and its tokenizer stay the same) as the exp `<variant>-seed<N>`.
The results then add, per variant and checkpoint, the mean and sample sd over seeds; the
finetuning effect per variant (paired by seed); and every pair of variants' difference
with its standard error, called resolved when its 95% Student-t interval (Welch) excludes
zero. That is the noise the figure's error bars show; with two or three seeds the sds are
rough and no correction is made for the many pairs.

MLflow: the queue worker inherits this process's environment (checked: a celery worker
spawned by `dvc queue start`, whose stage commands get its env plus `DVC_EXP_NAME`), so
we pass an absolute `MLFLOW_TRACKING_URI` (a relative sqlite path would land in the
throwaway temp copy) and `PHI1_EXPERIMENT`; `phi1.tracking` tags each run
`phi1.variant` = `DVC_EXP_NAME`. The experiment is created here first, from the repo
root, so its artifacts go to the repo's `mlruns/`.

Results come from `dvc exp show --json` (each experiment's metrics files as committed
in its exp ref), not from MLflow: it is exactly one record per variant, tied to the
exp's git commit, and it needs no tracking server. Solution loss is per token, and each
variant trains its own BPE on its own text, so per-token numbers are not comparable
across variants; `solution_nats_per_char` (loss x scored tokens / characters of the
same reference solutions) is, and is what the figure shows. It is exact while no
solution is cut by the model's context (`*_solution_truncated` counts the tasks cut,
prompt first, so most lose context only); validation losses are per token on each
variant's own held-out text, so not comparable across variants either.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.io import atomic_dir, write_json
from phi1.tracking import exp_name, split_exp_name

DEFAULT_EXPERIMENT = "phi1-ablation"
DEFAULT_TARGET = "evaluate"
# Fits every variant on the embedded default (stdlib corpus): the smallest pool,
# `filtered` alone, holds ~3.7M train tokens; pretraining reads 614k of them.
DEFAULT_MAX_TOKENS = 2_000_000

# Variant -> the params it sets (as `dvc exp run -S`). Params only: no code path of its own.
VARIANTS: dict[str, tuple[str, ...]] = {
    # The Stack analogue: every ingested file, no quality filter (deduplicated, NOT
    # decontaminated: the paper's unfiltered baseline was not either).
    "unfiltered": ("tokenize.pretrain_inputs=[data/raw:content]",),
    # CodeTextbook without the synthetic textbook: the quality-filtered code only.
    "filtered": ("tokenize.pretrain_inputs=[data/pruned/filtered:content]",),
    # The default recipe: filtered code + synthetic textbook (the token cap samples
    # documents across both inputs by content hash, so neither is dropped by order).
    "filtered+textbook": (
        "tokenize.pretrain_inputs=[data/pruned/filtered:content,data/pruned/textbook:text]",
    ),
}
CHECKPOINTS = {"base": "pretrained", "phi1": "+ CodeExercises finetune"}
BENCHMARKS = ("humaneval", "mbpp")
# What `--seeds` sets: the training seeds (init, data order, dropout), not the data.
SEED_KEYS = ("pretrain.seed", "finetune.seed")
TERMINAL = {"success", "failed"}
COLUMNS = (
    "variant", "checkpoint", "seed", "humaneval_pass@1", "mbpp_pass@1",
    "humaneval_solution_loss", "mbpp_solution_loss",
    "humaneval_solution_nats_per_char", "mbpp_solution_nats_per_char",
    "pretrain_val_loss", "finetune_val_loss", "tokens_seen", "pretrain_pool_tokens",
    "humaneval_solution_truncated", "mbpp_solution_truncated", "exp", "exp_rev",
)
# The numbers compared across variants (per-token losses are not comparable: own tokenizers).
SUMMARY_METRICS = ("humaneval_pass@1", "mbpp_pass@1", "humaneval_solution_nats_per_char", "mbpp_solution_nats_per_char")
# Column headers of the terminal tables.
HEADERS = {"humaneval_pass@1": "HE pass@1", "mbpp_pass@1": "MBPP pass@1",
           "humaneval_solution_loss": "HE loss/tok", "mbpp_solution_loss": "MBPP loss/tok",
           "humaneval_solution_nats_per_char": "HE loss/char", "mbpp_solution_nats_per_char": "MBPP loss/char",
           "pretrain_val_loss": "pretrain val", "finetune_val_loss": "finetune val",
           "tokens_seen": "tokens seen", "pretrain_pool_tokens": "pool tokens"}


@dataclass
class Ablation:
    """What one `phi1 ablate` did."""

    plan: dict[str, list[str]]  # exp name -> its `-S` overrides
    states: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    out: Optional[Path] = None
    seconds: float = 0.0

    @property
    def stats(self) -> dict[str, Any]:
        """`statistics(rows)`: means, sds, finetuning effects and variant contrasts."""
        return statistics(self.rows)

    @property
    def failed(self) -> list[str]:
        return [n for n, s in self.states.items() if s != "success"]


# --------------------------------------------------------------------------- plan


def valid_exp_name(name: str) -> bool:
    """DVC's rule for `--name`: a valid git ref component (git check-ref-format) and no
    `/` (dvc/repo/experiments/utils.py:check_ref_format). `+` is allowed."""
    if not name or "/" in name or name.startswith((".", "-")) or name.endswith((".", ".lock")):
        return False
    if ".." in name or "@{" in name or name == "@":
        return False
    return not re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name)


def plan(variants: Sequence[str] | None = None, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS,
         overrides: Sequence[str] = (), seeds: Sequence[int] | None = None) -> dict[str, list[str]]:
    """{exp name: its `-S` overrides}: the variant's own, then the shared token budget and
    the user's overrides (the same for every variant), then with `seeds` the training
    seeds of that exp (one exp `<variant>-seed<N>` per variant and seed)."""
    names = list(variants or VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise Phi1Error(f"unknown ablation variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if len(set(names)) != len(names):
        raise Phi1Error(f"--variants lists a variant twice: {', '.join(names)}")
    if max_tokens is not None and max_tokens < 1:
        raise Phi1Error("--max-tokens must be positive")
    for o in overrides:
        key = o.partition("=")[0]
        if "=" not in o or not key or "." not in key:
            raise Phi1Error(f"override {o!r}: expected section.key=value")
        if key in ("tokenize.pretrain_inputs", "tokenize.max_tokens"):
            raise Phi1Error(f"override {o!r}: {key} is what the variants (or --max-tokens) set")
        if seeds and key in SEED_KEYS:
            raise Phi1Error(f"override {o!r}: with --seeds, {key} is what each seed sets")
    if seeds is not None:
        seeds = list(seeds)
        if not seeds:
            raise Phi1Error("--seeds is empty")
        if any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in seeds):
            raise Phi1Error(f"--seeds must be non-negative integers, got {seeds}")
        if len(set(seeds)) != len(seeds):
            raise Phi1Error(f"--seeds lists a seed twice: {seeds}")
    shared = ([f"tokenize.max_tokens={max_tokens}"] if max_tokens is not None else []) + list(overrides)
    out = {}
    for n in names:
        for seed in (seeds if seeds is not None else [None]):
            name = exp_name(n, seed)
            if not valid_exp_name(name):  # the table's names are valid; guard a future edit
                raise Phi1Error(f"variant {name!r} is not a valid DVC experiment name (git ref rules)")
            out[name] = [*VARIANTS[n], *shared, *([] if seed is None else [f"{k}={seed}" for k in SEED_KEYS])]
    return out


def tracking_env(repo: Path, experiment: str, base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment for `dvc queue start`: an absolute tracking URI, the ablation's
    experiment, our venv's bin first on PATH (the queue worker runs `dvc` and the stages
    run `phi1` by name), and no PHI1_VARIANT (it would label every variant alike)."""
    env = dict(os.environ if base is None else base)
    uri = env.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str((repo / uri[len("sqlite:///"):]).resolve())
    elif "://" not in uri:  # a bare folder path (file store)
        uri = str((repo / uri).resolve())
    env["MLFLOW_TRACKING_URI"] = uri
    env["PHI1_EXPERIMENT"] = experiment
    env.pop("PHI1_VARIANT", None)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


# --------------------------------------------------------------------------- dvc


class Dvc:
    """The `dvc` CLI in one repo with one environment."""

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

    def show(self) -> list[dict]:
        """`dvc exp show --json` of the baseline commit's exps (HEAD's when none is set): a
        commit made while the queue runs moves HEAD, not the exps' baseline."""
        rev = ["--rev", self.baseline] if self.baseline else []
        return json.loads(self("exp", "show", "--json", "--hide-workspace", *rev).stdout or "[]")


def experiments(show: list[dict]) -> dict[str, dict]:
    """{exp name: {state, rev, data, log}} of the experiments of the first baseline shown
    (`Dvc.show`'s baseline)."""
    out: dict[str, dict] = {}
    for baseline in show[:1]:  # the first entry is the baseline whose exps we queued
        for e in baseline.get("experiments") or []:
            rev = (e.get("revs") or [{}])[0]
            ex = e.get("executor") or {}
            state = ex.get("state") or ("failed" if rev.get("error") else "success")
            out[e.get("name") or rev.get("name")] = {
                "state": state, "rev": rev.get("rev"), "data": rev.get("data") or {},
                "log": (ex.get("local") or {}).get("log"),
            }
    return out


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
        dvc(*args, target)


def wait(dvc: Dvc, names: Sequence[str], progress: Callable[[dict[str, str], dict[str, Optional[str]]], None],
         poll: float = 10.0, timeout: Optional[float] = None, jobs: int = 1,
         warn: Callable[[str], None] = lambda m: None) -> dict[str, str]:
    """Poll `dvc exp show` until every named exp succeeded or failed; return their states.
    A worker that died with exps still queued is replaced (twice at most)."""
    start, idle, errors, restarts = time.monotonic(), 0, 0, 0
    while True:
        try:
            exps = experiments(dvc.show())
            errors = 0
        except Phi1Error:
            # `exp show` races with an exp finishing (its temp dir vanishes mid-read); retry
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
    done = dvc("queue", "logs", name, check=False)
    return "\n".join((done.stdout + done.stderr).rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------- results


def _metrics(data: dict, path: str) -> dict:
    return ((data.get("metrics") or {}).get(path) or {}).get("data") or {}


def _params(data: dict) -> dict:
    return ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}


def solution_chars(benchmark: str, evaluate_params: dict) -> int:
    """Characters of the reference solutions the solution loss scores (same for every
    variant: the same tasks, whatever the tokenizer)."""
    from phi1.engines import benchmarks
    from phi1.engines.solution_loss import reference

    tasks = benchmarks.load(benchmark, evaluate_params.get("mbpp_split", "test"), evaluate_params.get("solution_loss_limit"))
    return sum(len(reference(t)) for t in tasks)


def rows_of(name: str, exp: dict) -> list[dict[str, Any]]:
    """One row per checkpoint of one finished exp (missing metrics are None); `variant`
    is the exp's variant (`filtered` for `filtered-seed7`), `seed` its pretrain seed."""
    data = exp["data"]
    ev, pre, fin = _metrics(data, "metrics/eval.json"), _metrics(data, "metrics/pretrain.json"), _metrics(data, "metrics/finetune.json")
    tok = _metrics(data, "metrics/tokenize.json")
    eval_params = _params(data).get("evaluate") or {}
    variant = split_exp_name(name)[0]
    seed = (_params(data).get("pretrain") or {}).get("seed")
    chars = {}
    rows = []
    for ckpt in CHECKPOINTS:
        row: dict[str, Any] = {"variant": variant, "checkpoint": ckpt, "seed": seed}
        for bm in BENCHMARKS:
            m = (ev.get(ckpt) or {}).get(bm) or {}
            row[f"{bm}_pass@1"] = m.get("pass@1")
            row[f"{bm}_solution_loss"] = m.get("solution_loss")
            per_char = None
            if m.get("solution_loss") is not None and m.get("solution_tokens"):
                if bm not in chars:
                    chars[bm] = solution_chars(bm, eval_params)
                per_char = m["solution_loss"] * m["solution_tokens"] / chars[bm]
            row[f"{bm}_solution_nats_per_char"] = per_char
            row[f"{bm}_solution_truncated"] = m.get("solution_truncated")
        row["pretrain_val_loss"] = pre.get("final_val_loss")
        row["finetune_val_loss"] = fin.get("final_val_loss") if ckpt == "phi1" else None
        seen = pre.get("tokens_seen", pre.get("tokens"))
        fin_seen = fin.get("tokens_seen", fin.get("tokens"))
        if ckpt == "phi1" and seen is not None and fin_seen is not None:
            seen = seen + fin_seen
        row["tokens_seen"] = seen
        row["pretrain_pool_tokens"] = (tok.get("pretrain") or {}).get("train_tokens")
        row["exp"] = name
        row["exp_rev"] = exp.get("rev")
        rows.append(row)
    return rows


def collect(show: list[dict], names: Sequence[str]) -> list[dict[str, Any]]:
    exps = experiments(show)
    rows = []
    for n in names:
        if exps.get(n, {}).get("state") == "success":
            rows.extend(rows_of(n, exps[n]))
    return rows


def _mean_sd(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample sd (None below two values) of the non-None values."""
    xs = [float(x) for x in values if x is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return mean, sd


def _t_crit(df: Optional[float]) -> Optional[float]:
    """The two-sided 95% Student-t critical value for `df` degrees of freedom (None: none)."""
    if df is None or not df > 0:
        return None
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def _judge(diff: float, se: Optional[float], df: Optional[float]) -> dict[str, Any]:
    """{se, df, half_width, resolved}: resolved when the 95% t interval of `diff` excludes 0
    (|diff| > t(0.975, df) * SE); None without an SE (a single seed). A zero SE (every seed
    gave the same number) resolves any nonzero difference."""
    if se is None:
        return {"se": None, "df": None, "half_width": None, "resolved": None}
    if se == 0:
        return {"se": 0.0, "df": df, "half_width": 0.0, "resolved": diff != 0}
    crit = _t_crit(df)
    half = None if crit is None else crit * se
    return {"se": se, "df": df, "half_width": half, "resolved": None if half is None else abs(diff) > half}


def _welch_df(va: float, na: int, vb: float, nb: int) -> Optional[float]:
    """Welch-Satterthwaite degrees of freedom of a difference of two means."""
    a, b = va / na, vb / nb
    den = (a * a / (na - 1) if na > 1 else 0.0) + (b * b / (nb - 1) if nb > 1 else 0.0)
    return (a + b) ** 2 / den if den > 0 else None


def statistics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Across the seeds of each variant (one seed gives means and no noise estimate):

    - `summary`: per variant x checkpoint, n, the seeds, mean and sd of SUMMARY_METRICS;
    - `finetune_effect`: per variant and metric, phi1 minus base paired by exp (same
      seed, same data): mean, sd, SE, df = n - 1, the 95% t half-width, resolved;
    - `contrasts`: per checkpoint, metric and pair of variants, the difference of the
      means, its SE (Welch: sqrt(sd_a^2/n_a + sd_b^2/n_b)), Welch-Satterthwaite df, the
      95% t half-width, and resolved = the interval excludes 0.

    Each test is on its own (no correction for the many pairs), and with 2-3 seeds the
    sds themselves are rough: read "resolved" as "worth a closer look", not as proof.
    """
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for v in variants:
        for c in CHECKPOINTS:
            group = [r for r in rows if r["variant"] == v and r["checkpoint"] == c]
            if not group:
                continue
            entry: dict[str, Any] = {"variant": v, "checkpoint": c, "n": len(group), "seeds": [r.get("seed") for r in group]}
            for m in SUMMARY_METRICS:
                entry[f"{m}_mean"], entry[f"{m}_sd"] = _mean_sd([r.get(m) for r in group])
            summary[(v, c)] = entry
    effects = []
    for v in variants:
        pairs: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["variant"] == v:
                pairs.setdefault(r.get("exp") or v, {})[r["checkpoint"]] = r
        for m in SUMMARY_METRICS:
            diffs = [p["phi1"][m] - p["base"][m] for p in pairs.values()
                     if {"base", "phi1"} <= p.keys() and p["base"].get(m) is not None and p["phi1"].get(m) is not None]
            if not diffs:
                continue
            mean, sd = _mean_sd(diffs)
            se = None if sd is None else sd / math.sqrt(len(diffs))
            effects.append({"variant": v, "metric": m, "n": len(diffs), "mean": mean, "sd": sd,
                            **_judge(mean, se, len(diffs) - 1)})
    contrasts = []
    for c in CHECKPOINTS:
        for m in SUMMARY_METRICS:
            for i, a in enumerate(variants):
                for b in variants[i + 1:]:
                    ea, eb = summary.get((a, c)), summary.get((b, c))
                    if not ea or not eb or ea[f"{m}_mean"] is None or eb[f"{m}_mean"] is None:
                        continue
                    diff = ea[f"{m}_mean"] - eb[f"{m}_mean"]
                    sa, sb = ea[f"{m}_sd"], eb[f"{m}_sd"]
                    if sa is None or sb is None:
                        se, df = None, None
                    else:
                        se = math.sqrt(sa ** 2 / ea["n"] + sb ** 2 / eb["n"])
                        df = _welch_df(sa ** 2, ea["n"], sb ** 2, eb["n"])
                    contrasts.append({"checkpoint": c, "metric": m, "a": a, "b": b, "diff": diff, **_judge(diff, se, df)})
    return {"summary": list(summary.values()), "finetune_effect": effects, "contrasts": contrasts}


def verdicts(stats: dict[str, Any], metrics: Sequence[str] = SUMMARY_METRICS[2:]) -> list[str]:
    """One plain line per finetuning effect and variant contrast of `metrics` (default: the
    solution losses per character, the numbers that move at small scale)."""
    def judged(x: dict) -> str:
        if x["se"] is None:
            return "noise unknown (one seed: run --seeds)"
        if x["half_width"] is None:
            return "noise unknown (no degrees of freedom)"
        df = "" if x["df"] is None else f", df {x['df']:.1f}"
        return f"+- {x['half_width']:.4f} (95% t{df}): " + ("resolved" if x["resolved"] else "within noise")

    lines = []
    for e in stats.get("finetune_effect", []):
        if e["metric"] in metrics:
            lines.append(f"finetune effect, {e['variant']}, {e['metric']}: {e['mean']:+.4f} over {e['n']} seed(s) "
                         + judged(e))
    for c in stats.get("contrasts", []):
        if c["metric"] in metrics:
            lines.append(f"{c['checkpoint']}, {c['metric']}: {c['a']} - {c['b']} = {c['diff']:+.4f} "
                         + judged(c))
    return lines


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """Figure 2.1 in the paper's style: per variant, base vs finetuned bars; HumanEval
    pass@1 and the solution loss per character of HumanEval and MBPP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    summary = {(e["variant"], e["checkpoint"]): e for e in statistics(rows)["summary"]}
    repeated = any(e["n"] > 1 for e in summary.values())
    panels = [
        ("humaneval_pass@1", "HumanEval pass@1 (%)", 100.0, "higher is better"),
        ("humaneval_solution_nats_per_char", "HumanEval solution loss\n(nats/char, lower is better; axis zoomed)", 1.0, None),
        ("mbpp_solution_nats_per_char", "MBPP solution loss\n(nats/char, lower is better; axis zoomed)", 1.0, None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    width = 0.38
    colors = {"base": "#9ecae1", "phi1": "#3182bd"}
    for ax, (key, label, scale, _) in zip(axes, panels):
        for i, ckpt in enumerate(CHECKPOINTS):
            vals, errs = [], []
            for v in variants:
                e = summary.get((v, ckpt)) or {}
                mean, sd = e.get(f"{key}_mean"), e.get(f"{key}_sd")
                vals.append(float("nan") if mean is None else mean * scale)
                errs.append(0.0 if sd is None else sd * scale)
            xs = [j + (i - 0.5) * width for j in range(len(variants))]
            bars = ax.bar(xs, vals, width, label=CHECKPOINTS[ckpt], color=colors[ckpt], edgecolor="#333",
                          yerr=errs if repeated else None, capsize=3 if repeated else 0)
            ax.bar_label(bars, labels=["-" if math.isnan(x) else (f"{x:.1f}" if scale == 100 else f"{x:.3f}") for x in vals],
                         fontsize=7, padding=2)
            if repeated:  # each seed as a dot on its bar
                for j, v in enumerate(variants):
                    ys = [r[key] * scale for r in rows if r["variant"] == v and r["checkpoint"] == ckpt
                          and r.get(key) is not None]
                    ax.scatter([xs[j]] * len(ys), ys, s=9, color="#222", zorder=3)
        ax.set_xticks(range(len(variants)), variants, fontsize=8)
        ax.set_ylabel(label, fontsize=9)
        if scale == 1.0:
            finite = [r.get(key) for r in rows if r.get(key) is not None]
            if finite:  # zoom in: the differences are a few percent of the value
                lo, hi = min(finite), max(finite)
                pad = max((hi - lo) * 0.6, hi * 0.02)
                ax.set_ylim(max(0.0, lo - pad), hi + pad)
        else:
            ax.set_ylim(0, max(5.0, *(r.get(key) * 100 + 5 for r in rows if r.get(key) is not None)))
    axes[0].legend(fontsize=8, loc="upper left")
    seeds = max((e["n"] for e in summary.values()), default=1)
    fig.suptitle("Data quality ablation (cf. phi-1 Figure 2.1): same model and token budget, different pretraining data"
                 + (f"; mean of {seeds} seeds, bars +- 1 sd, dots = seeds" if repeated else ""), fontsize=9)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_results(out: Path, result: Ablation, meta: dict[str, Any]) -> None:
    """results.json, results.csv and figure.png, all or nothing."""
    stats = result.stats
    with atomic_dir(out) as tmp:
        write_json(tmp / "results.json", {**meta, "plan": result.plan, "states": result.states, "rows": result.rows,
                                          "statistics": stats, "verdicts": verdicts(stats)})
        with open(tmp / "results.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows(result.rows)
        if result.rows:
            (tmp / "figure.png").write_bytes(figure(result.rows))


def table(rows: Sequence[dict[str, Any]], title: str = "phi1 ablation"):
    """The results as a rich Table."""
    from rich.table import Table

    t = Table(title=title)
    cols = [c for c in COLUMNS if c not in ("exp", "exp_rev") and not c.endswith("_truncated")]
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
    for m in SUMMARY_METRICS:
        t.add_column(HEADERS[m], justify="right")
    for e in stats.get("summary", []):
        cells = []
        for m in SUMMARY_METRICS:
            mean, sd = e[f"{m}_mean"], e[f"{m}_sd"]
            cells.append("-" if mean is None else f"{mean:.4f}" + ("" if sd is None else f" +- {sd:.4f}"))
        t.add_row(e["variant"], e["checkpoint"], ",".join(str(x) for x in e["seeds"]), *cells)
    return t


def _key(s: str) -> str:
    """An MLflow-safe metric/tag key part (`+` is not allowed there)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", s)


@contextlib.contextmanager
def _tracking(env: dict[str, str]) -> Iterator[None]:
    """This process's MLflow target = the one the queued stages get (restored after)."""
    keys = ("MLFLOW_TRACKING_URI", "PHI1_EXPERIMENT", "PHI1_VARIANT", "DVC_EXP_NAME")
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ.pop(k, None)
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "PHI1_EXPERIMENT")})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def log_summary(out: Path, result: Ablation, meta: dict[str, Any], env: dict[str, str], repo: Path = Path(".")) -> str:
    """An `ablate` run in the ablation's experiment holding the results as artifacts and
    one metric per variant x checkpoint x number; returns its run id."""
    import mlflow

    from phi1.tracking import numeric_metrics, setup, stage_run

    with _tracking(env):
        setup(env["PHI1_EXPERIMENT"], artifact_root=repo / "mlruns")
        tags = {"phi1.ablation.variants": ",".join(result.plan)}
        tags.update({f"phi1.ablation.exp.{_key(r.get('exp') or r['variant'])}": r["exp_rev"] or "" for r in result.rows})
        with stage_run("ablate", None, run_name="ablate", tags=tags) as run:
            mlflow.log_params({"variants": ",".join(result.plan), **{k: str(v) for k, v in meta.items()}})
            nums = {}
            for r in result.rows:
                nums.update(numeric_metrics({k.replace("@", "_at_"): v for k, v in r.items() if k not in ("variant", "checkpoint", "seed")},
                                            f"{_key(r.get('exp') or r['variant'])}.{r['checkpoint']}."))
            for e in result.stats.get("summary", []):
                if e["n"] > 1:  # seed repeats: the variant's mean and sd
                    for m in SUMMARY_METRICS:
                        for what in ("mean", "sd"):
                            if e[f"{m}_{what}"] is not None:
                                nums[f"{_key(e['variant'])}.{e['checkpoint']}.{what}.{m.replace('@', '_at_')}"] = e[f"{m}_{what}"]
            mlflow.log_metrics(nums)
            mlflow.log_artifacts(str(out), "ablation")
            return run.info.run_id


def run(variants: Sequence[str] | None = None, max_tokens: Optional[int] = DEFAULT_MAX_TOKENS,
        overrides: Sequence[str] = (), target: str = DEFAULT_TARGET, jobs: int = 1, seeds: Sequence[int] | None = None,
        experiment: str = DEFAULT_EXPERIMENT, out: str | Path = "reports/ablation", repo: str | Path = ".",
        collect_only: bool = False, baseline: str = "HEAD", poll: float = 10.0, timeout: Optional[float] = None,
        progress: Optional[Callable[[dict[str, str], dict[str, Optional[str]]], None]] = None,
        warn: Callable[[str], None] = lambda m: None) -> Ablation:
    """Queue, run and wait for the variants (unless `collect_only`), then collect their
    metrics, write `out`/results.{json,csv} + figure.png and log them to MLflow. The exps
    branch off `baseline` (HEAD when it starts; another commit only with `collect_only`)."""
    from phi1.tracking import setup

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
        if workers_running(repo):
            raise Phi1Error("a DVC queue worker is already running here, and its environment (not this command's "
                            "tracking URI) would reach the stages; wait for `dvc queue status` to show none, or `dvc queue stop`")
        missing = untracked_files(repo)
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            warn(f"queued experiments leave out untracked files ({shown}); `git add` any a stage needs")
        # Create the experiment from the repo root first, so its artifacts go to <repo>/mlruns
        # and not to a queued exp's temp copy.
        with _tracking(env):
            setup(experiment, artifact_root=repo / "mlruns")
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
            "tokenize_params": {n: _params(exps[n]["data"]).get("tokenize") for n in the_plan if n in exps}}
    result.out = Path(out)
    write_results(result.out, result, meta)
    log_summary(result.out, result, meta, env, repo)
    return result


__all__ = ["VARIANTS", "Ablation", "plan", "run", "collect", "rows_of", "figure", "table", "summary_table", "statistics",
           "verdicts", "tracking_env",
           "valid_exp_name", "experiments", "DEFAULT_EXPERIMENT", "DEFAULT_MAX_TOKENS"]
