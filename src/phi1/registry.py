"""The MLflow model-registry seam: versions, aliases, gates, promotion, rollback.

    version = register_version("checkpoints/phi1", "phi1", tags)   # inside an MLflow run
    decision = promote(cfg, "phi1")            # the `challenger` version, gated
    decision = rollback("phi1")                # `champion` back to the previous holder

A model version carries its lineage and gate inputs as tags (written by the `register`
stage): `eval.<benchmark>.pass_at_<k>`, `probe.<key>`, `validation.status`,
`contamination.*`, `lineage.dvc.<path>`, `params.sha256`, `git.commit`. Promotion
compares them with the current champion's tags, so it needs nothing but the registry.

Every decision (the gate table, the previous champion, who and when) is stored as the
JSON tag `phi1.decision` on the version it concerns; the registered model's tag
`phi1.champion_history` lists the champions in order, which is what `rollback` walks
back. Promotion and rollback hold an exclusive file lock around read-champion, gate,
move-alias, so two promotions started at once are serialised and each is gated against
the champion the other left. With a sqlite store the lock is `<store>.promote.lock` beside
it, which covers every process that can open the store. With any other store (an MLflow
server over HTTP, a database) it is `phi1/promote-<hash of the URI>.lock` in the user's
cache folder ($XDG_CACHE_HOME or ~/.cache): it serialises the promotions of one machine
against that store, whatever their working directory, but no file lock reaches other
machines, and MLflow has no compare-and-set on aliases. Across machines the `champion`
alias is the source of truth: `rollback` trusts it over the history tag, and a team
promotes from one place (CI) or accepts that two promotions in the same instant may
both be gated against the same champion.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from phi1.config import RegisterConfig
from phi1.errors import Phi1Error

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "phi1.champion_history"
DECISION_TAG = "phi1.decision"


@dataclass(frozen=True)
class Gate:
    """One row of the gate table."""

    name: str
    status: str  # pass | fail | skip
    candidate: Optional[str] = None
    champion: Optional[str] = None
    rule: str = ""
    note: str = ""


@dataclass
class Decision:
    """What a promotion or rollback did (or, on a dry run, would do)."""

    action: str  # promote | rollback
    model: str
    version: str
    previous_champion: Optional[str]
    accepted: bool
    dry_run: bool = False
    gates: list[Gate] = field(default_factory=list)
    at: str = ""
    by: str = ""

    @property
    def failing(self) -> list[str]:
        return [g.name for g in self.gates if g.status == "fail"]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failing"] = self.failing
        return d


def client():
    """An MlflowClient on the project's tracking URI (phi1.tracking.setup)."""
    from mlflow import MlflowClient

    from phi1.tracking import setup

    setup()
    return MlflowClient()


# --------------------------------------------------------------------------- register


def pip_requirements() -> list[str]:
    """Pinned requirements of a registered model. Explicit because MLflow's inference of
    them for a transformers model asks for torchvision, which generating text does not need."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "accelerate", "safetensors", "tokenizers")]


def register_version(checkpoint: str | Path, model_name: str, tags: dict[str, str]):
    """Log an HF model folder with mlflow.transformers into the active run, register it as
    a new version of `model_name`, tag it and give it the alias `challenger`."""
    import mlflow

    ckpt = Path(checkpoint)
    if not (ckpt / "config.json").is_file():
        raise Phi1Error(f"{ckpt}: not a Hugging Face model folder (no config.json)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # a dict of loaded parts, not the folder path: MLflow's path route breaks on transformers 5
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    info = mlflow.transformers.log_model(
        transformers_model={"model": model, "tokenizer": tokenizer}, task="text-generation", name=model_name,
        registered_model_name=model_name, pip_requirements=pip_requirements(),
    )
    c = client()
    version = str(info.registered_model_version)
    for k, v in tags.items():
        c.set_model_version_tag(model_name, version, k, v)
    c.set_registered_model_alias(model_name, CHALLENGER, version)
    return c.get_model_version(model_name, version)


# --------------------------------------------------------------------------- gates


def _float(tags: dict[str, str], key: str) -> Optional[float]:
    try:
        v = float(tags[key])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(v) else v


def contamination_left(tags: dict[str, str], tau: float) -> Optional[int]:
    """Training items left at or above `tau` after pruning, from a version's contamination
    tags; None when the report did not cover `tau`. Pruning at the report's tau removed
    every item scoring at or above it, so a gate tau at or above it leaves none; a lower
    gate tau leaves the items the sweep counts between the two."""
    if "contamination.tau" not in tags or "contamination.sweep" not in tags:
        return None
    pruned_at = float(tags["contamination.tau"])
    if tau >= pruned_at - 1e-9:
        return 0
    rows = {round(float(r["tau"]), 6): int(r["removed_total"]) for r in json.loads(tags["contamination.sweep"])}
    at_gate, at_pruned = rows.get(round(tau, 6)), rows.get(round(pruned_at, 6))
    if at_gate is None or at_pruned is None:
        return None
    return at_gate - at_pruned


def evaluate_gates(cfg: RegisterConfig, candidate: dict[str, str], champion: Optional[dict[str, str]]) -> list[Gate]:
    """The gate table of a candidate version's tags against the champion's (None: no champion)."""
    gates: list[Gate] = []

    def missing(name: str, key: str, rule: str) -> Gate:
        has = champion is not None and key in champion
        fail = cfg.on_missing == "fail" or (cfg.on_missing == "auto" and has)
        why = "the champion has it" if has else "nor has the champion"
        return Gate(name, "fail" if fail else "skip", None, champion.get(key) if champion else None, rule,
                    f"not available: no {key} ({why}; on_missing={cfg.on_missing})")

    if cfg.require_validation:
        rule = "all suites passed"
        status = candidate.get("validation.status")
        if status is None:
            gates.append(missing("validation", "validation.status", rule))
        else:
            gates.append(Gate("validation", "pass" if status == "passed" else "fail", status,
                              champion.get("validation.status") if champion else None, rule,
                              candidate.get("validation.failed", "")))
    if cfg.contamination_tau is not None:
        tau = cfg.contamination_tau
        rule = f"0 items left at tau >= {tau}"
        left = contamination_left(candidate, tau)
        if left is None:
            g = missing("contamination", "contamination.sweep", rule)
            if "contamination.sweep" in candidate:
                g = Gate(g.name, g.status, None, None, rule, f"not available (the report's sweep has no tau {tau})")
            gates.append(g)
        else:
            champ_left = contamination_left(champion, tau) if champion else None
            gates.append(Gate("contamination", "pass" if left == 0 else "fail", str(left),
                              None if champ_left is None else str(champ_left), rule))
    for key in cfg.gate_metrics:
        rule = f">= champion - {cfg.tolerance:g}"
        value = _float(candidate, key)
        if value is None:
            gates.append(missing(key, key, rule))
            continue
        best = _float(champion, key) if champion else None
        if champion is None or best is None:
            note = "no champion yet" if champion is None else "the champion has no value"
            gates.append(Gate(key, "pass", f"{value:.4g}", None, rule, note))
            continue
        ok = value >= best - cfg.tolerance - 1e-12
        gates.append(Gate(key, "pass" if ok else "fail", f"{value:.4g}", f"{best:.4g}", rule))
    return gates


# --------------------------------------------------------------------------- promote / rollback


def lock_path() -> Path:
    """The promotion lock file: beside a sqlite store, else one per store URI in the user's
    cache folder (a remote store has no local file to sit beside)."""
    from phi1.tracking import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).with_name(Path(uri[len("sqlite:///"):]).name + ".promote.lock")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "phi1" / f"promote-{hashlib.sha256(uri.rstrip('/').encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def registry_lock(timeout: float = 300.0) -> Iterator[None]:
    """Hold the exclusive promotion lock (fcntl; released when the process dies)."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Phi1Error(f"registry lock {path} held by another promotion for {timeout:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _alias_version(c, model: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def _history(c, model: str) -> list[str]:
    tags = c.get_registered_model(model).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _stamp() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return time.strftime("%Y-%m-%dT%H:%M:%S%z"), user


def resolve_version(c, model: str, version: Optional[str]):
    """The version to promote: `version`, else the one holding `challenger`."""
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(model)
    except MlflowException:
        raise Phi1Error(f"registered model {model!r} not found in the registry") from None
    if version is None:
        mv = _alias_version(c, model, CHALLENGER)
        if mv is None:
            raise Phi1Error(f"model {model!r} has no `{CHALLENGER}` version; give --version")
        return mv
    try:
        return c.get_model_version(model, str(version))
    except MlflowException:
        raise Phi1Error(f"model {model!r} has no version {version}") from None


def promote(cfg: RegisterConfig, model: Optional[str] = None, version: Optional[str | int] = None,
            dry_run: bool = False) -> Decision:
    """Gate a version against the champion; when every gate passes (and not a dry run),
    move `champion` to it and store the decision record. Returns the decision either way."""
    model = model or cfg.model_name
    c = client()
    with registry_lock():
        mv = resolve_version(c, model, None if version is None else str(version))
        champ = _alias_version(c, model, CHAMPION)
        at, by = _stamp()
        if champ is not None and champ.version == mv.version:
            return Decision("promote", model, str(mv.version), str(champ.version), True, dry_run,
                            [Gate("champion", "pass", note="already the champion")], at, by)
        gates = evaluate_gates(cfg, dict(mv.tags), dict(champ.tags) if champ else None)
        decision = Decision("promote", model, str(mv.version), None if champ is None else str(champ.version),
                            all(g.status != "fail" for g in gates), dry_run, gates, at, by)
        if dry_run:
            return decision
        if decision.accepted:
            history = _history(c, model)
            c.set_registered_model_alias(model, CHAMPION, mv.version)
            c.set_registered_model_tag(model, HISTORY_TAG, json.dumps(history + [str(mv.version)]))
        c.set_model_version_tag(model, mv.version, DECISION_TAG, json.dumps(decision.as_dict()))
        return decision


def rollback(model: str) -> Decision:
    """Move `champion` back to the version that held it before the current one."""
    c = client()
    with registry_lock():
        from mlflow.exceptions import MlflowException

        try:
            c.get_registered_model(model)
        except MlflowException:
            raise Phi1Error(f"registered model {model!r} not found in the registry") from None
        champ = _alias_version(c, model, CHAMPION)
        if champ is None:
            raise Phi1Error(f"model {model!r} has no `{CHAMPION}` to roll back")
        history = _history(c, model)
        # the alias is the truth: drop history entries after (and including) the current champion
        while history and history[-1] != str(champ.version):
            history.pop()
        if len(history) < 2:
            raise Phi1Error(f"model {model!r}: version {champ.version} has no previous champion to roll back to")
        history.pop()
        target = history[-1]
        at, by = _stamp()
        decision = Decision("rollback", model, target, str(champ.version), True, False,
                            [Gate("rollback", "pass", target, str(champ.version), "previous champion")], at, by)
        c.set_registered_model_alias(model, CHAMPION, target)
        c.set_registered_model_tag(model, HISTORY_TAG, json.dumps(history))
        c.set_model_version_tag(model, target, DECISION_TAG, json.dumps(decision.as_dict()))
        return decision


def gate_table(decision: Decision):
    """The decision as a rich Table."""
    from rich.table import Table

    title = f"{decision.action} {decision.model} v{decision.version} (champion: " \
            f"{'v' + decision.previous_champion if decision.previous_champion else 'none'})"
    t = Table(title=title)
    for col in ("gate", "status", "candidate", "champion", "rule", "note"):
        t.add_column(col)
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}
    for g in decision.gates:
        t.add_row(g.name, f"[{colour.get(g.status, 'white')}]{g.status}[/]", g.candidate or "-",
                  g.champion or "-", g.rule, g.note)
    return t


__all__ = [
    "Gate", "Decision", "client", "register_version", "evaluate_gates", "contamination_left",
    "promote", "rollback", "gate_table", "registry_lock", "lock_path", "pip_requirements",
    "CHAMPION", "CHALLENGER",
]
