"""The `register` stage: checkpoints become `challenger` model versions with their lineage.

    phi1 register --metrics metrics/register.json      # params: `register`
    dvc repro register
    phi1 promote                                       # on purpose, afterwards: `champion`

Registers `register.checkpoint` (and `base_checkpoint`) as new versions of `model_name`
(`base_model_name`) from the model its training run logged (finetune's, pretrain's with
`log_model: true`; found by the checkpoint folder's content hash, which that run tagged),
so the weights are stored once in MLflow and each version's run is its training run. A
checkpoint no run logged is a one-line error before anything is registered (no re-logging
here: a copy logged by `register` would have no training run behind it). Each version
gets the alias `challenger` and the lineage tags `phi1.engines.model_registry` gates on:
git commit, the DVC hash of every output in
dvc.lock (every dataset and checkpoint upstream), sha256 of params.yaml, the validation
status, the contamination summary and sweep, the checkpoint's eval and probe metrics
(pass@k, solution loss). A missing input file (no probe suite yet, say) only leaves its
tags out; the gates then report it as not available. A version registered inside `dvc
exp run` (`DVC_EXP_NAME`) or `phi1 ablate` (`PHI1_VARIANT`) is tagged
`phi1.experiment=<name>` (and `phi1.variant`, `phi1.seed`), which `phi1 promote` refuses
unless the version is named.

The stage never moves `champion` by default (`promote: off`): it gates the new
`model_name` version against the champion as a dry run and records that decision in
`metrics/register.json` and the version's `phi1.decision` tag, so `dvc exp show` tells
whether `phi1 promote` would accept it. Besides the comparisons with the champion the
gates hold absolute floors (`min_pass_at_1` per benchmark, `min_probe_pass_rate`,
`max_solution_loss` per benchmark: gates `min.<tag>` / `max.<tag>`), each recorded in
the decision like every gate; the defaults let the demo model through. `promote: try|require` promotes it inside the
stage through `phi1.engines.model_registry.promote`, as a plain `phi1 promote` would (so never an
experiment's version); `require` also fails the stage when it is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from phi1.config import RegisterConfig
from phi1.errors import Phi1Error
from phi1.io import write_json


def _read_json(path: Optional[str | Path]) -> Optional[Any]:
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise Phi1Error(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _number_tags(d: Any, prefix: str) -> dict[str, str]:
    """The numbers of a metrics dict as tags, `eval.humaneval.pass_at_1 -> "0.25"`."""
    from phi1.tracking import flatten, metric_key

    return {k: repr(v) for k, v in flatten(d, prefix, numbers=True, key=metric_key).items()}


def lineage_tags(
    checkpoint: str | Path,
    params_path: str | Path = "params.yaml",
    lock_path: str | Path = "dvc.lock",
    eval_path: Optional[str | Path] = "metrics/eval.json",
    probe_path: Optional[str | Path] = "metrics/probe.json",
    validation_path: Optional[str | Path] = "reports/validation/summary.json",
    contamination_path: Optional[str | Path] = "reports/contamination.json",
) -> dict[str, str]:
    """The tags a version of `checkpoint` carries; inputs that are missing are left out."""
    from phi1.tracking import dvc_lock_hashes, git_commit, input_hashes

    ckpt = Path(checkpoint)
    sha, dirty = git_commit()
    tags = {"git.commit": sha, "git.dirty": str(dirty).lower(), "checkpoint.path": str(checkpoint),
            "checkpoint.hash": input_hashes([ckpt], lock_path)[str(Path(str(ckpt)))]}
    if Path(params_path).is_file():
        tags["params.sha256"] = hashlib.sha256(Path(params_path).read_bytes()).hexdigest()
    for path, md5 in sorted(dvc_lock_hashes(lock_path).items()):
        tags[f"lineage.dvc.{path}"] = md5

    evals = _read_json(eval_path) or {}
    tags.update(_number_tags(evals.get(ckpt.name, {}), "eval"))
    tags = {k: v for k, v in tags.items() if not k.endswith(".n_tasks")}
    probe = _read_json(probe_path) or {}
    tags.update(_number_tags(probe.get(ckpt.name, {}), "probe"))

    validation = _read_json(validation_path)
    if isinstance(validation, dict) and validation:
        failed = sorted(n for n, r in validation.items() if not (isinstance(r, dict) and r.get("success")))
        tags["validation.status"] = "failed" if failed else "passed"
        tags["validation.failed"] = ", ".join(failed)
        tags["validation.summary"] = json.dumps(
            {n: {"success": r.get("success"), "evaluated": r.get("evaluated"),
                 "failed": len(r["failed"]) if isinstance(r.get("failed"), list) else r.get("failed")}
             for n, r in validation.items() if isinstance(r, dict)}, sort_keys=True)

    report = _read_json(contamination_path)
    if isinstance(report, dict) and "tau" in report and "sweep" in report:
        at_tau = report.get("at_tau") or {}
        tags["contamination.tau"] = repr(float(report["tau"]))
        tags["contamination.removed"] = json.dumps(at_tau.get("removed", {}), sort_keys=True)
        tags["contamination.tasks_similar"] = json.dumps(at_tau.get("tasks_similar", {}), sort_keys=True)
        tags["contamination.sweep"] = json.dumps(
            [{"tau": r["tau"], "removed_total": sum(r.get("removed", {}).values())} for r in report["sweep"]]
            + ([{"tau": report["tau"], "removed_total": sum(at_tau.get("removed", {}).values())}] if at_tau else []))
    return tags


def run(
    cfg: RegisterConfig,
    metrics_path: str | Path,
    params_path: str | Path,
    lock_path: str | Path,
    eval_path: Optional[str | Path],
    probe_path: Optional[str | Path],
    validation_path: Optional[str | Path],
    contamination_path: Optional[str | Path],
) -> dict[str, Any]:
    """Register the checkpoints, promote per `cfg.promote`; return what `metrics_path` gets.
    An input file that is None or missing leaves its lineage tags out."""
    from phi1.engines import model_registry as registry
    from phi1.engines.generation import check_model_dir
    from phi1.tracking import stage_run

    pairs = [(cfg.model_name, cfg.checkpoint)]
    if cfg.base_model_name and cfg.base_checkpoint:
        pairs.append((cfg.base_model_name, cfg.base_checkpoint))
    for _, ckpt in pairs:
        check_model_dir(ckpt, "register")
    for _, ckpt in pairs:
        registry.find_logged_model(ckpt)  # every checkpoint's training run logged it, before registering any
    files = [p for p in (params_path, eval_path, probe_path, validation_path, contamination_path)
             if p is not None and Path(p).is_file()]
    out: dict[str, Any] = {}
    with stage_run("register", cfg, inputs=[c for _, c in pairs] + files):
        for name, ckpt in pairs:
            tags = lineage_tags(ckpt, params_path, lock_path, eval_path, probe_path, validation_path,
                                contamination_path) | experiment_tags()
            mv = registry.register_version(ckpt, name, tags)
            out[name] = {"version": int(mv.version), "checkpoint": str(ckpt), "registered": 1}
            if registry.EXPERIMENT_TAG in tags:
                out[name]["experiment"] = tags[registry.EXPERIMENT_TAG]
    # Gated as a plain `phi1 promote` would be (never `named`): an experiment's is refused.
    check_only = cfg.promote == "off"
    decision = registry.promote(cfg, cfg.model_name, out[cfg.model_name]["version"], dry_run=check_only)
    if check_only:
        registry.record(decision)
    out[cfg.model_name].update(decision_metrics(decision))
    from rich.console import Console

    Console(stderr=True).print(registry.gate_table(decision))
    write_json(metrics_path, out)
    if not decision.accepted and cfg.promote == "require":
        raise Phi1Error(f"register: {cfg.model_name} v{decision.version} refused by gates: "
                        f"{'; '.join(registry.refusals(decision))}")
    return out


def experiment_tags() -> dict[str, str]:
    """`phi1.experiment` (the DVC experiment or ablation variant this process runs in, seed
    suffix included) and the variant tags of phi1.tracking; {} on the main line."""
    from phi1.engines.model_registry import EXPERIMENT_TAG
    from phi1.tracking import variant_name, variant_tags

    name = variant_name()
    return {EXPERIMENT_TAG: name, **variant_tags()} if name else {}


def decision_metrics(decision) -> dict[str, Any]:
    """The `metrics/register.json` entry of a decision: whether `champion` moved, whether
    the gates pass, and each gate keyed by name (so `dvc metrics show` flattens it)."""
    return {
        "promoted": int(decision.accepted and not decision.dry_run),
        "promotable": int(decision.accepted),
        "gates_failed": len(decision.failing),
        "champion": None if decision.previous_champion is None else int(decision.previous_champion),
        "gates": {g.name: {"metric": g.metric, "direction": g.direction, "candidate": g.candidate,
                           "champion": g.champion, "rule": g.rule, "verdict": g.verdict, "note": g.note}
                  for g in decision.gates},
    }


__all__ = ["run", "lineage_tags", "experiment_tags", "decision_metrics"]
