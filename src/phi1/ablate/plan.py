"""The ablation's design: its variants, what each experiment sets, and the environment
its queued stages run in.

Each variant is one DVC experiment over the same pipeline; only params differ (the
variant's `tokenize.pretrain_inputs`, one `tokenize.max_tokens` for all, the user's `-S`
for all, and with `--seeds` the training seeds of each repeat).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from phi1.errors import Phi1Error
from phi1.tracking import exp_name

DEFAULT_EXPERIMENT = "phi1-ablation"
DEFAULT_TARGET = "evaluate"
# Fits every variant on the embedded default (stdlib corpus): the smallest pool,
# `filtered` alone, holds ~3.7M train tokens; pretraining reads 614k of them.
DEFAULT_MAX_TOKENS = 2_000_000

# Variant -> the params it sets (as `dvc exp run -S`). Params only: no code path of its own.
VARIANTS: dict[str, tuple[str, ...]] = {
    # The Stack analogue: every ingested file, no quality filter; deduplicated and, like
    # every variant, decontaminated (decontaminate.prune_raw writes data/pruned/raw), so
    # that no variant is ahead for having seen benchmark solutions.
    "unfiltered": ("decontaminate.prune_raw=true", "tokenize.pretrain_inputs=[data/pruned/raw:content]"),
    # CodeTextbook without the synthetic textbook: the quality-filtered code only.
    "filtered": ("tokenize.pretrain_inputs=[data/pruned/filtered:content]",),
    # The default recipe: filtered code + synthetic textbook (the token cap samples
    # documents across both inputs by content hash, so neither is dropped by order).
    "filtered+textbook": (
        "tokenize.pretrain_inputs=[data/pruned/filtered:content,data/pruned/textbook:text]",
    ),
}
# Every experiment produces both checkpoints, so three variants give the paper's six bars.
CHECKPOINTS = {"base": "pretrained", "phi1": "+ CodeExercises finetune"}
# What `--seeds` sets: the training seeds (init, data order, dropout), not the data.
SEED_KEYS = ("pretrain.seed", "finetune.seed")


def valid_exp_name(name: str) -> bool:
    """DVC's rule for `--name`: a valid git ref component (git check-ref-format) and no
    `/` (dvc/repo/experiments/utils.py:check_ref_format). `+` is allowed."""
    if not name or "/" in name or name.startswith((".", "-")) or name.endswith((".", ".lock")):
        return False
    if ".." in name or "@{" in name or name == "@":
        return False
    return not re.search(r"[\x00-\x20\x7f~^:?*\[\\]", name)


def split_variants(text: Optional[str]) -> Optional[list[str]]:
    """`--variants a,b` -> ["a", "b"]; None (all variants) for none given."""
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def parse_seeds(text: Optional[str]) -> Optional[list[int]]:
    """`--seeds 1234,1,2` -> [1234, 1, 2]; None for none given."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise Phi1Error(f"--seeds {text!r}: expected comma-separated integers, e.g. 1234,1,2") from None


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
    run `phi1` by name), and no PHI1_VARIANT (it would label every variant alike).

    The queue worker inherits it (checked: a celery worker spawned by `dvc queue start`,
    whose stage commands get its env plus `DVC_EXP_NAME`), so a relative sqlite path is
    made absolute: it would otherwise land in the exp's throwaway temp copy."""
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
