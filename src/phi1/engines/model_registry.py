"""The MLflow model-registry seam: versions, aliases, gates, promotion, rollback.

    version = register_version("checkpoints/phi1", "phi1", tags)   # the finetune run's logged model
    decision = promote(cfg, "phi1")            # the `challenger`, gated; an experiment's is refused
    decision = promote(cfg, "phi1", 7, named=True)   # version 7, named on purpose (--version 7)
    decision = rollback("phi1")                # `champion` back to the previous holder

Only `promote` moves `champion`, and only `phi1 promote` (a person, or CI on main) or the
`register` stage with `register.promote: try|require` calls it; by default the stage
registers a `challenger` and records what the gates say, nothing more.

A model version carries its lineage and gate inputs as tags (written by the `register`
stage): `eval.<benchmark>.pass_at_<k>`, `eval.<benchmark>.solution_loss`, `probe.<key>`,
`validation.status`, `contamination.*`, `lineage.dvc.<path>`, `params.sha256`,
`git.commit`, and `phi1.experiment` when it came from a DVC experiment (`DVC_EXP_NAME`)
or an ablation variant (`PHI1_VARIANT`). Promotion compares them with the current
champion's tags, so it needs nothing but the registry.

The gates (each a row with the tag it reads, a direction where one applies, the
candidate's and champion's values, its rule and a verdict: pass, fail or skip):
- experiment: the version is not an experiment's, or it was named explicitly
  (`phi1 promote --version N`); a plain `phi1 promote` refuses an experiment's challenger.
- validation (`require_validation`): every Great Expectations suite passed.
- contamination (`contamination_tau`): no training item left at or above tau.
- one per `gate_metrics` entry, `metric: higher|lower`: the candidate is not worse than
  the champion by more than `tolerance` (candidate >= champion - tolerance when higher
  is better, <= champion + tolerance when lower is better, as for solution loss).
- floors, absolute (`min_pass_at_1` per benchmark, `min_probe_pass_rate`,
  `max_solution_loss` per benchmark): `min.<tag>` passes when the candidate's value is at
  least the bound, `max.<tag>` when at most, whatever the champion; the defaults (pass
  rates >= 0, solution losses <= 8 nats, under a uniform guess over the demo's
  4096-token vocabulary, ln 4096 = 8.3) let the demo model through.
- improvement (`require_improvement`): at least one gated metric is strictly better than
  the champion's, or there is no champion.
So the rule is: no gated metric worse by more than the tolerance, and at least one
strictly better, or no champion yet. A tie is not an improvement: pass@1 0 against 0
with equal (or absent) solution losses is refused, whatever the tolerance.
A gate whose input is missing fails or is skipped per `on_missing`.

Every decision (the gate table, the previous champion, whether the version was named,
who and when) is stored as the JSON tag `phi1.decision` on the version it concerns (the
`register` stage stores its check there too, with `dry_run: true`); the registered
model's tag `phi1.champion_history` lists the champions in order, which is what
`rollback` walks back. Promotion and rollback hold an exclusive file lock around
read-champion, gate, move-alias, so two promotions started at once are serialised and
each is gated against the champion the other left. With a sqlite store the lock is
`<store>.promote.lock` beside it, which covers every process that can open the store.
With any other store (an MLflow server over HTTP, a database) it is
`phi1/promote-<hash of the URI>.lock` in the user's cache folder ($XDG_CACHE_HOME or
~/.cache): it serialises the promotions of one machine against that store, whatever
their working directory, but no file lock reaches other machines, and MLflow has no
compare-and-set on aliases. Across machines the `champion` alias is the source of
truth: `rollback` trusts it over the history tag, and a team promotes from one place
(CI) or accepts that two promotions in the same instant may both be gated against the
same champion.
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
EXPERIMENT_TAG = "phi1.experiment"
_EPS = 1e-12  # float noise: a difference below it is a tie


@dataclass(frozen=True)
class Gate:
    """One row of the gate table: what was checked, how, and the verdict."""

    name: str
    verdict: str  # pass | fail | skip
    candidate: Any = None
    champion: Any = None
    rule: str = ""
    note: str = ""
    metric: Optional[str] = None  # the version tag the gate reads
    direction: Optional[str] = None  # higher | lower: which way is better


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
    named: bool = False  # the version was named explicitly, not taken from `challenger`

    @property
    def failing(self) -> list[str]:
        return [g.name for g in self.gates if g.verdict == "fail"]

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


CHECKPOINT_TAG = "phi1.checkpoint.md5"
"""The tag a training run's logged model carries: `phi1.tracking.content_hash` of the
checkpoint folder it was exported as (written by phi1.engines.training.run, which the
`register` stage does not import)."""


def find_logged_model(checkpoint: str | Path):
    """The MLflow logged model the training run of `checkpoint` logged (`log_model: true`),
    found by the folder's content hash, the newest when several runs made the same bytes;
    a one-line Phi1Error when no run logged it."""
    import mlflow

    from phi1.tracking import content_hash, tracking_uri

    md5 = content_hash(checkpoint)
    experiments = [e.experiment_id for e in client().search_experiments()]  # active ones: any variant's
    found = mlflow.search_logged_models(
        experiment_ids=experiments, filter_string=f"tags.`{CHECKPOINT_TAG}` = '{md5}'",
        order_by=[{"field_name": "creation_time", "ascending": False}], max_results=1, output_format="list",
    ) if experiments else []
    if not found:
        raise Phi1Error(f"register: no training run logged the model of {checkpoint} (content md5 {md5}) in "
                        f"{tracking_uri()}; train it with `log_model: true` (pretrain/finetune params)")
    return found[0]


def register_version(checkpoint: str | Path, model_name: str, tags: dict[str, str]):
    """Register the model that `checkpoint`'s training run logged (`models:/<model_id>`, so
    the weights are stored once and the version's run is the training run) as a new version
    of `model_name`, tag it and give it the alias `challenger`."""
    import mlflow

    logged = find_logged_model(checkpoint)
    mv = mlflow.register_model(f"models:/{logged.model_id}", model_name,
                               tags={**tags, "phi1.model_id": logged.model_id})
    c = client()
    c.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    return c.get_model_version(model_name, str(mv.version))


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


def evaluate_gates(cfg: RegisterConfig, candidate: dict[str, str], champion: Optional[dict[str, str]],
                   named: bool = False) -> list[Gate]:
    """The gate table of a candidate version's tags against the champion's (None: no
    champion); `named`: the version was named explicitly, which lets an experiment's pass."""
    gates: list[Gate] = []

    def missing(name: str, key: str, rule: str, direction: Optional[str] = None) -> Gate:
        has = champion is not None and key in champion
        fail = cfg.on_missing == "fail" or (cfg.on_missing == "auto" and has)
        why = "the champion has it" if has else "nor has the champion"
        theirs = None if champion is None else _float(champion, key) if name == key else champion.get(key)
        return Gate(name, "fail" if fail else "skip", None, theirs, rule,
                    f"not available: no {key} ({why}; on_missing={cfg.on_missing})", key, direction)

    rule = "not an experiment's version, unless named (--version)"
    experiment = candidate.get(EXPERIMENT_TAG)
    if experiment is None:
        gates.append(Gate("experiment", "pass", None, None, rule, "main line", EXPERIMENT_TAG))
    elif named:
        gates.append(Gate("experiment", "pass", experiment, None, rule, "experiment, named explicitly", EXPERIMENT_TAG))
    else:
        gates.append(Gate("experiment", "fail", experiment, None, rule,
                          f"registered by experiment {experiment!r}; promote it only by naming its version",
                          EXPERIMENT_TAG))

    if cfg.require_validation:
        rule = "all suites passed"
        status = candidate.get("validation.status")
        if status is None:
            gates.append(missing("validation", "validation.status", rule))
        else:
            failed = candidate.get("validation.failed", "")
            gates.append(Gate("validation", "pass" if status == "passed" else "fail", status,
                              champion.get("validation.status") if champion else None, rule,
                              f"failed suites: {failed}" if failed else "", "validation.status"))
    if cfg.contamination_tau is not None:
        tau = cfg.contamination_tau
        rule = f"0 items left at tau >= {tau}"
        left = contamination_left(candidate, tau)
        if left is None:
            g = missing("contamination", "contamination.sweep", rule, "lower")
            if "contamination.sweep" in candidate:
                g = Gate(g.name, g.verdict, None, None, rule, f"not available (the report's sweep has no tau {tau})",
                         g.metric, g.direction)
            gates.append(g)
        else:
            champ_left = contamination_left(champion, tau) if champion else None
            gates.append(Gate("contamination", "pass" if left == 0 else "fail", left, champ_left, rule,
                              "" if left == 0 else f"{left} items left", "contamination.sweep", "lower"))

    gates.extend(floor_gates(cfg, candidate, champion, missing))

    tol = cfg.tolerance
    gains: dict[str, float] = {}  # metric -> how much better than the champion (negative: worse)
    for key, direction in cfg.gate_metrics.items():
        higher = direction == "higher"
        rule = f">= champion - {tol:g}" if higher else f"<= champion + {tol:g}"
        value = _float(candidate, key)
        if value is None:
            gates.append(missing(key, key, rule, direction))
            continue
        best = _float(champion, key) if champion else None
        if best is None:
            note = "no champion yet" if champion is None else "the champion has no value"
            gates.append(Gate(key, "pass", value, None, rule, note, key, direction))
            continue
        gain = value - best if higher else best - value
        gains[key] = gain
        if gain > _EPS:
            note = f"better by {gain:.4g}"
        elif gain < -_EPS:
            note = f"worse by {-gain:.4g}" + (f" > tolerance {tol:g}" if -gain > tol + _EPS else f" (within {tol:g})")
        else:
            note = "equal"
        gates.append(Gate(key, "pass" if -gain <= tol + _EPS else "fail", value, best, rule, note, key, direction))

    if cfg.require_improvement:
        rule = "a gated metric strictly better than the champion's, or no champion"
        better = [k for k, g in gains.items() if g > _EPS]
        if champion is None:
            gates.append(Gate("improvement", "pass", None, None, rule, "no champion yet"))
        elif better:
            gates.append(Gate("improvement", "pass", ", ".join(better), None, rule))
        elif gains:
            tie = all(abs(g) <= _EPS for g in gains.values())
            gates.append(Gate("improvement", "fail", "none", None, rule,
                              "a tie: every gated metric equals the champion's" if tie
                              else "no gated metric better than the champion's"))
        else:
            gates.append(Gate("improvement", "fail", "none", None, rule,
                              "no gated metric comparable with the champion's"))
    return gates


def floors(cfg: RegisterConfig) -> list[tuple[str, str, float]]:
    """The absolute gates of `cfg` as (metric tag, higher|lower, bound): `min_pass_at_1`
    per benchmark, `min_probe_pass_rate`, `max_solution_loss` per benchmark."""
    out = [(f"eval.{b}.pass_at_1", "higher", float(v)) for b, v in cfg.min_pass_at_1.items()]
    if cfg.min_probe_pass_rate is not None:
        out.append(("probe.pass_rate", "higher", float(cfg.min_probe_pass_rate)))
    return out + [(f"eval.{b}.solution_loss", "lower", float(v)) for b, v in cfg.max_solution_loss.items()]


def floor_gates(cfg: RegisterConfig, candidate: dict[str, str], champion: Optional[dict[str, str]],
                missing) -> list[Gate]:
    """One gate per floor (`min.<tag>`: at least the bound) and ceiling (`max.<tag>`: at
    most): the candidate's own value against an absolute bound, whatever the champion."""
    gates = []
    for key, direction, bound in floors(cfg):
        higher = direction == "higher"
        name, rule = (f"min.{key}", f">= {bound:g}") if higher else (f"max.{key}", f"<= {bound:g}")
        value = _float(candidate, key)
        if value is None:
            g = missing(name, key, rule, direction)
            gates.append(Gate(name, g.verdict, None, _float(champion, key) if champion else None, rule, g.note,
                              key, direction))
            continue
        ok = value >= bound - _EPS if higher else value <= bound + _EPS
        note = ("" if ok else f"{'under the floor' if higher else 'over the ceiling'} by {abs(value - bound):.4g}")
        gates.append(Gate(name, "pass" if ok else "fail", value, _float(champion, key) if champion else None,
                          rule, note, key, direction))
    return gates


def refusals(decision: Decision) -> list[str]:
    """One line per failing gate: why `decision`'s version was (or would be) refused."""
    lines = []
    for g in decision.gates:
        if g.verdict != "fail":
            continue
        if g.name == "experiment":
            lines.append(f"experiment: v{decision.version} was registered by experiment {g.candidate!r}; "
                         f"only naming it lifts this gate: phi1 promote --version {decision.version}")
        elif g.metric and g.name in (f"min.{g.metric}", f"max.{g.metric}"):  # an absolute floor or ceiling
            lines.append(f"{g.name}: {g.metric} = {_fmt(g.candidate)}, rule {g.metric} {g.rule}: {g.note}")
        elif g.direction and g.metric == g.name:
            lines.append(f"{g.name} ({g.direction} is better): {_fmt(g.candidate)} against the champion's "
                         f"{_fmt(g.champion)}, rule {g.rule}: {g.note}")
        else:
            lines.append(f"{g.name}: {g.note or _fmt(g.candidate)} (rule: {g.rule})")
    return lines


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


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
            dry_run: bool = False, named: bool = False) -> Decision:
    """Gate a version (default: the `challenger`) against the champion; when every gate
    passes (and not a dry run), move `champion` to it. Stores the decision record on the
    version unless a dry run, and returns it either way. `named`: a person named this
    version on purpose, which is the only way an experiment's version passes."""
    model = model or cfg.model_name
    c = client()
    with registry_lock():
        mv = resolve_version(c, model, None if version is None else str(version))
        champ = _alias_version(c, model, CHAMPION)
        at, by = _stamp()
        if champ is not None and champ.version == mv.version:
            return Decision("promote", model, str(mv.version), str(champ.version), True, dry_run,
                            [Gate("champion", "pass", note="already the champion")], at, by, named)
        gates = evaluate_gates(cfg, dict(mv.tags), dict(champ.tags) if champ else None, named)
        decision = Decision("promote", model, str(mv.version), None if champ is None else str(champ.version),
                            all(g.verdict != "fail" for g in gates), dry_run, gates, at, by, named)
        if dry_run:
            return decision
        if decision.accepted:
            history = _history(c, model)
            c.set_registered_model_alias(model, CHAMPION, mv.version)
            c.set_registered_model_tag(model, HISTORY_TAG, json.dumps(history + [str(mv.version)]))
        record(decision)
        return decision


def record(decision: Decision) -> None:
    """Store `decision` as the JSON tag `phi1.decision` on the version it concerns (the
    `register` stage records its dry-run check this way)."""
    client().set_model_version_tag(decision.model, decision.version, DECISION_TAG, json.dumps(decision.as_dict()))


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
        record(decision)
        return decision


def gate_table(decision: Decision):
    """The decision as a rich Table."""
    from rich.markup import escape  # experiment names and notes may hold brackets
    from rich.table import Table

    title = f"{decision.action} {decision.model} v{decision.version} (champion: " \
            f"{'v' + decision.previous_champion if decision.previous_champion else 'none'})"
    t = Table(title=title)
    for col in ("gate", "better", "verdict", "candidate", "champion", "rule", "note"):
        t.add_column(col)
    colour = {"pass": "green", "fail": "red", "skip": "yellow"}
    for g in decision.gates:
        t.add_row(escape(g.name), g.direction or "-", f"[{colour.get(g.verdict, 'white')}]{g.verdict}[/]",
                  escape(_fmt(g.candidate)), escape(_fmt(g.champion)), escape(g.rule), escape(g.note))
    return t



def verdict_line(decision: Decision) -> str:
    """The line `phi1 promote` ends with: the failing gates, or who is (would be) champion."""
    if not decision.accepted:
        return f"{decision.model} v{decision.version} refused; failing gates: {', '.join(decision.failing)}"
    return f"{decision.model} v{decision.version} {'would become' if decision.dry_run else 'is now'} champion"


def rollback_line(decision: Decision) -> str:
    """What `phi1 rollback` did: `model: champion vOLD -> vNEW`."""
    return f"{decision.model}: champion v{decision.previous_champion} -> v{decision.version}"

__all__ = [
    "Gate", "Decision", "client", "register_version", "evaluate_gates", "contamination_left", "floors", "floor_gates",
    "promote", "record", "refusals", "rollback", "gate_table", "verdict_line", "rollback_line", "registry_lock", "lock_path", "find_logged_model",
    "CHAMPION", "CHALLENGER", "EXPERIMENT_TAG", "CHECKPOINT_TAG",
]
