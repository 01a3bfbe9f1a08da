"""What the experiments recorded: DVC's exp records -> one row per variant x checkpoint.

Results come from DVC (each experiment's metrics files as committed in its exp ref), not
from MLflow: exactly one record per variant, tied to the exp's git commit, with no
tracking server. They are read in-process through DVC's Repo API
(`Repo.experiments.show`), whose records' `dumpd()` is what `dvc exp show --json`
prints. Not `dvc.api.exp_show`: it returns the flattened display table (7-character
revs, no executor log, every value stringified and re-parsed, so ints become floats and
lists strings, and `file:key` column names that depend on which other files exist).

Solution loss is per token, and each variant trains its own BPE on its own text, so
per-token numbers are not comparable across variants; `solution_nats_per_char` (loss x
scored tokens / characters of the same reference solutions) is, and is what the figure
shows. It is exact while no solution is cut by the model's context
(`*_solution_truncated` counts the tasks cut, prompt first, so most lose context only);
validation losses are per token on each variant's own held-out text, so not comparable
across variants either.

Probe columns, when the exps also ran the probe stage (`phi1 ablate --target
evaluate,probe`): `probe_solution_nats_per_char` (metrics/probe.json's `<ckpt>.solution_loss`,
the mean over probes of nats per character, so comparable across variants) and, on the
finetuned row, `probe_emergence_delta` with `probe_emergence_ci95_low`/`_high`: finetuned
minus base, paired by probe, with its 95% Student-t interval (`emergence.solution_loss_delta`),
which is an interval even with one seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from phi1.ablate.plan import CHECKPOINTS
from phi1.ablate.stats import statistics
from phi1.errors import Phi1Error
from phi1.tracking import split_exp_name

BENCHMARKS = ("humaneval", "mbpp")
COLUMNS = (
    "variant", "checkpoint", "seed", "humaneval_pass@1", "mbpp_pass@1",
    "humaneval_solution_loss", "mbpp_solution_loss",
    "humaneval_solution_nats_per_char", "mbpp_solution_nats_per_char",
    "probe_solution_nats_per_char", "probe_emergence_delta", "probe_emergence_ci95_low", "probe_emergence_ci95_high",
    "pretrain_val_loss", "finetune_val_loss", "tokens_seen", "pretrain_pool_tokens",
    "humaneval_solution_truncated", "mbpp_solution_truncated", "exp", "exp_rev",
)


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


def show(repo: Path, baseline: Optional[str] = None) -> list[dict]:
    """The exps of the `baseline` commit (HEAD's when None), in the shape `dvc exp show
    --json --hide-workspace --rev <baseline>` prints: a commit made while the queue runs
    moves HEAD, not the exps' baseline."""
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc_repo:
            states = dvc_repo.experiments.show(revs=[baseline] if baseline else None, hide_workspace=True,
                                               fetch_running=True)
    # Any error, as the CLI's exit status reported it: reading races with an exp finishing
    # (its temp dir vanishes mid-read), and DVC does not type that error.
    except Exception as exc:  # noqa: BLE001
        raise Phi1Error(f"reading the DVC experiments of {repo} failed: {exc}") from exc
    return [s.dumpd() for s in states]


def experiments(show: list[dict]) -> dict[str, dict]:
    """{exp name: {state, rev, data, log}} of the experiments of the first baseline shown
    (`show`'s baseline)."""
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


def _metrics(data: dict, path: str) -> dict:
    return ((data.get("metrics") or {}).get(path) or {}).get("data") or {}


def params(data: dict) -> dict:
    """The params.yaml an exp ran with, from its record's `data`."""
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
    probe = _metrics(data, "metrics/probe.json")
    emergence = probe.get("emergence") if isinstance(probe.get("emergence"), dict) else {}
    delta = emergence.get("solution_loss_delta") if isinstance(emergence.get("solution_loss_delta"), dict) else {}
    eval_params = params(data).get("evaluate") or {}
    variant = split_exp_name(name)[0]
    seed = (params(data).get("pretrain") or {}).get("seed")
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
        row["probe_solution_nats_per_char"] = (probe.get(ckpt) or {}).get("solution_loss")
        tuned = ckpt == emergence.get("finetuned") and emergence.get("base") in CHECKPOINTS
        ci = (delta.get("ci95") or {}) if tuned else {}
        row["probe_emergence_delta"] = delta.get("mean") if tuned else None
        row["probe_emergence_ci95_low"], row["probe_emergence_ci95_high"] = ci.get("low"), ci.get("high")
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
    """The rows of the named exps that succeeded, in `names` order."""
    exps = experiments(show)
    rows = []
    for n in names:
        if exps.get(n, {}).get("state") == "success":
            rows.extend(rows_of(n, exps[n]))
    return rows
