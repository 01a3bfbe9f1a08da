"""The ablation's outputs: results.json, results.csv and figure.png in one folder (all
or nothing), and an `ablate` MLflow run holding them with one metric per exp x
checkpoint x number."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from phi1.ablate.figure import figure
from phi1.ablate.results import COLUMNS, Ablation
from phi1.ablate.stats import SUMMARY_METRICS, verdicts
from phi1.io import MARKER, atomic_dir, write_json
from phi1.tracking import environ


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


def _key(s: str) -> str:
    """An MLflow-safe metric/tag key part (`+` is not allowed there)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", s)


def tracking_target(env: dict[str, str]):
    """This process's MLflow target = the one the queued stages get (restored after)."""
    return environ({"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"], "PHI1_EXPERIMENT": env["PHI1_EXPERIMENT"],
                    "PHI1_VARIANT": None, "DVC_EXP_NAME": None})


def create_experiment(env: dict[str, str], repo: Path) -> None:
    """Create the ablation's MLflow experiment from the repo root before anything is
    queued, so its artifacts go to <repo>/mlruns and not to a queued exp's temp copy."""
    from phi1.tracking import setup

    with tracking_target(env):
        setup(env["PHI1_EXPERIMENT"], artifact_root=repo / "mlruns")


def log_summary(out: Path, result: Ablation, meta: dict[str, Any], env: dict[str, str], repo: Path = Path(".")) -> str:
    """An `ablate` run in the ablation's experiment holding the results as artifacts and
    one metric per variant x checkpoint x number; returns its run id."""
    import mlflow

    from phi1.tracking import numeric_metrics, setup, stage_run

    with tracking_target(env):
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
            for f in sorted(Path(out).iterdir()):  # not atomic_dir's marker file
                if f.is_file() and f.name != MARKER:
                    mlflow.log_artifact(str(f), "ablation")
            return run.info.run_id
