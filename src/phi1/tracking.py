"""The MLflow seam: every stage opens its run here.

    with stage_run("filter", cfg, inputs=["data/raw", "data/annotations"]) as run:
        mlflow.log_metrics({...})

Tracking URI: `MLFLOW_TRACKING_URI` when set, else `sqlite:///mlflow.db` (MLflow 3
refuses a plain `mlruns` file store); artifacts of experiments created here go under
`mlruns/`. Experiment: `PHI1_EXPERIMENT`, default `phi1`. Each run is tagged with the
stage, the git commit, and the hash of each input (from dvc.lock when DVC produced it,
else computed here), so a run says which data made it. Runs of a DVC experiment (`dvc exp
run` sets `DVC_EXP_NAME`) or of a named variant (`PHI1_VARIANT`, which wins) are also
tagged `phi1.variant`, so `phi1 ablate` and the MLflow UI can group them; a seed repeat's
experiment `<variant>-seed<N>` is tagged `phi1.variant` = `<variant>` and `phi1.seed` = N.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from phi1.config import flat_dict, to_dict
from phi1.errors import Phi1Error

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlruns"
DEFAULT_EXPERIMENT = "phi1"


class TrackingError(Phi1Error, RuntimeError):
    """The tracking server or store cannot be used."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def experiment_name() -> str:
    return os.environ.get("PHI1_EXPERIMENT") or DEFAULT_EXPERIMENT


def variant_name() -> str | None:
    """`PHI1_VARIANT`, else the DVC experiment this process runs in (DVC's queue and temp
    runs set `DVC_EXP_NAME`, see dvc/repo/experiments/queue/base.py), else None."""
    return os.environ.get("PHI1_VARIANT") or os.environ.get("DVC_EXP_NAME") or None


_SEEDED = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def exp_name(variant: str, seed: int | None = None) -> str:
    """The DVC experiment name of a variant, or of one seed of it (`filtered-seed7`)."""
    return variant if seed is None else f"{variant}-seed{seed}"


def split_exp_name(name: str) -> tuple[str, int | None]:
    """(variant, seed) of an experiment name from `exp_name`; seed None when unseeded."""
    m = _SEEDED.match(name)
    return (m["variant"], int(m["seed"])) if m else (name, None)


def variant_tags() -> dict[str, str]:
    """`phi1.variant` (and `phi1.seed` for a seed repeat) of this process's variant, or {}:
    for every run, nested ones too, so a search by variant finds all of a variant's runs."""
    name = variant_name()
    if not name:
        return {}
    variant, seed = split_exp_name(name)
    return {"phi1.variant": variant, **({} if seed is None else {"phi1.seed": str(seed)})}


def _check_reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as exc:
        raise TrackingError(f"MLflow tracking server unreachable at {uri}: {exc}") from None


def setup(experiment: str | None = None, artifact_root: str | Path = DEFAULT_ARTIFACT_ROOT) -> str:
    """Point MLflow at our store and experiment (created with its artifacts under
    `artifact_root` when new); return the experiment id."""
    import mlflow

    uri = tracking_uri()
    _check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = experiment or experiment_name()
    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            location = None
            if not uri.startswith(("http://", "https://", "databricks")):
                location = Path(artifact_root).resolve().as_uri()
            exp_id = mlflow.create_experiment(name, artifact_location=location)
        else:
            exp_id = exp.experiment_id
    except Exception as exc:  # MlflowException, sqlalchemy errors: name the store
        raise TrackingError(f"cannot use MLflow tracking store {uri}: {exc}") from None
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit(cwd: str | Path = ".") -> tuple[str, bool]:
    """(commit sha or 'unknown', dirty?)"""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd, capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def dvc_lock_hashes(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """path -> md5 of every stage output recorded in dvc.lock."""
    p = Path(lock_path)
    if not p.is_file():
        return {}
    lock = yaml.safe_load(p.read_text()) or {}
    out: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for o in stage.get("outs") or []:
            if "md5" in o:
                out[os.path.normpath(o["path"])] = o["md5"]
    return out


def content_hash(path: str | Path) -> str:
    """md5 over a file, or over the sorted relative paths and contents of a directory."""
    p = Path(path)
    h = hashlib.md5()
    if p.is_file():
        files = [p]
        base = p.parent
    else:
        files = sorted(q for q in p.rglob("*") if q.is_file())
        base = p
    for f in files:
        h.update(str(f.relative_to(base)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def input_hashes(inputs: Sequence[str | Path], lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """Hash of each input: `md5:<dvc hash>` (dvc.lock, DVC's own) when the file matches it,
    else `computed:<md5>`."""
    locked = dvc_lock_hashes(lock_path)
    out = {}
    for item in inputs:
        key = os.path.normpath(str(item))
        if not Path(item).exists():
            out[key] = "missing"
        elif key in locked:
            out[key] = f"dvc:{locked[key]}"
        else:
            out[key] = f"computed:{content_hash(item)}"
    return out


@contextlib.contextmanager
def stage_run(
    stage: str,
    cfg: Any = None,
    inputs: Sequence[str | Path] = (),
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run for a stage, logging its config, git commit and input hashes."""
    import mlflow

    setup()
    sha, dirty = git_commit()
    all_tags = {"phi1.stage": stage, "git.commit": sha, "git.dirty": str(dirty).lower()}
    for path, h in input_hashes(inputs).items():
        all_tags[f"data.{path}"] = h
    all_tags.update(variant_tags())
    all_tags.update(tags or {})
    with mlflow.start_run(run_name=run_name or stage, tags=all_tags) as run:
        if cfg is not None:
            params = {k: _param_value(v) for k, v in flat_dict(cfg).items()}
            mlflow.log_params(params)
            mlflow.log_dict(to_dict(cfg), f"config/{stage}.json")
        yield run


@contextlib.contextmanager
def nested_run(run_name: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """A child run of the active stage run, tagged like it with the variant (and seed)."""
    import mlflow

    with mlflow.start_run(run_name=run_name, nested=True, tags={**variant_tags(), **(tags or {})}) as run:
        yield run


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten a nested metrics dict to `a.b.c -> float`, keeping only numbers (for
    mlflow.log_metrics; booleans, strings and nulls are left out)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(numeric_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 6000 else s[:5997] + "..."
