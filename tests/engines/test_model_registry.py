"""The registry seam against a real sqlite MLflow store (and, in the slow tests, a tiny
real model): gates with directions, the improvement rule, refusal of experiments unless
named, promotion, rollback, two promotions at once, loading the champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phi1.engines import model_registry as registry
from phi1.cli import app
from phi1.config import RegisterConfig
from phi1.errors import Phi1Error
from phi1.register.stage import run
from tests.tiny_model import log_as_trained, make_tiny_model

CFG = RegisterConfig(base_model_name=None, base_checkpoint=None)
HE_LOSS, MBPP_LOSS = "eval.humaneval.solution_loss", "eval.mbpp.solution_loss"


def register(cfg: RegisterConfig) -> dict:
    """The register stage on the files dvc.yaml gives it, in the test's root."""
    return run(cfg, metrics_path="metrics/register.json", params_path="params.yaml", lock_path="dvc.lock",
               eval_path="metrics/eval.json", probe_path="metrics/probe.json",
               validation_path="reports/validation/summary.json", contamination_path="reports/contamination.json")


def tags(**kw) -> dict[str, str]:
    base = {"validation.status": "passed", "contamination.tau": "0.9",
            "contamination.sweep": json.dumps([{"tau": 0.95, "removed_total": 1}, {"tau": 0.9, "removed_total": 3},
                                               {"tau": 0.8, "removed_total": 7}]),
            "eval.humaneval.pass_at_1": "0.5", "eval.mbpp.pass_at_1": "0.4", "probe.pass_rate": "0.3",
            HE_LOSS: "4.3", MBPP_LOSS: "5.5"}
    base.update({k.replace("__", "."): v for k, v in kw.items()})
    return {k: v for k, v in base.items() if v is not None}


# The versions of the issue: `dvc exp run -S filter.threshold=0.7` gave a worse model that
# the old gates promoted (pass@1 0 against 0 everywhere, solution losses higher).
MAIN = tags(eval__humaneval__pass_at_1="0.0", eval__mbpp__pass_at_1="0.0", probe__pass_rate=None,
            eval__humaneval__solution_loss="4.293", eval__mbpp__solution_loss="5.462")
WORSE = {**MAIN, HE_LOSS: "4.317", MBPP_LOSS: "5.531"}


def alias(c, name: str) -> str:
    return str(c.get_model_version_by_alias("phi1", name).version)


def by_name(gates):
    return {g.name: g for g in gates}


def add_version(workdir: Path, version_tags: dict[str, str], model: str = "phi1") -> str:
    """A real version in the sqlite registry carrying `version_tags`, made `challenger` as
    the register stage does; its weights do not matter to the gates, so it has none."""
    c = registry.client()
    if not c.search_registered_models(f"name='{model}'"):
        c.create_registered_model(model)
    (workdir / "model").mkdir(exist_ok=True)
    mv = c.create_model_version(model, source=str(workdir / "model"), tags=version_tags)
    c.set_registered_model_alias(model, registry.CHALLENGER, mv.version)
    return str(mv.version)


def promote_cli(*args: str):
    """`phi1 promote ARGS` with the default `register` params."""
    if not Path("params.yaml").is_file():
        Path("params.yaml").write_text("register: {}\n")
    return CliRunner().invoke(app, ["promote", *args])


# --------------------------------------------------------------------------- gates


def test_gates_pass_against_no_champion_and_within_tolerance():
    first = registry.evaluate_gates(CFG, tags(), None)
    assert all(g.verdict == "pass" for g in first)
    assert by_name(first)["improvement"].note == "no champion yet"
    cand = tags(eval__humaneval__pass_at_1="0.495", eval__humaneval__solution_loss="4.2")
    gates = by_name(registry.evaluate_gates(CFG, cand, tags()))
    assert gates["eval.humaneval.pass_at_1"].verdict == "pass"  # 0.005 below, tolerance 0.01
    assert gates[HE_LOSS].verdict == "pass" and gates[HE_LOSS].note == "better by 0.1"
    assert gates["improvement"].verdict == "pass" and gates["improvement"].candidate == HE_LOSS


def test_every_gate_has_a_direction_and_a_worse_solution_loss_fails():
    """Lower solution loss is better: the issue's v2 (4.317 against 4.293) is refused."""
    gates = by_name(registry.evaluate_gates(CFG, WORSE, MAIN))
    he = gates[HE_LOSS]
    assert (he.metric, he.direction, he.candidate, he.champion, he.verdict) == (HE_LOSS, "lower", 4.317, 4.293, "fail")
    assert he.rule == "<= champion + 0.01" and he.note == "worse by 0.024 > tolerance 0.01"
    assert gates[MBPP_LOSS].verdict == "fail"
    hi = gates["eval.humaneval.pass_at_1"]
    assert (hi.direction, hi.rule, hi.verdict) == ("higher", ">= champion - 0.01", "pass")
    assert all(gates[k].direction for k in CFG.gate_metrics if k in gates)
    # the same losses the other way round: lower is better, so the candidate passes
    better = by_name(registry.evaluate_gates(CFG, MAIN, WORSE))
    assert better[HE_LOSS].verdict == better[MBPP_LOSS].verdict == better["improvement"].verdict == "pass"


def test_a_tie_at_zero_is_not_an_improvement():
    """pass@1 0 against 0 passes every 'not worse' rule, but nothing is better: refused."""
    zero = {**MAIN}
    gates = by_name(registry.evaluate_gates(CFG, zero, dict(zero)))
    assert gates["eval.humaneval.pass_at_1"].verdict == "pass" and gates["eval.humaneval.pass_at_1"].note == "equal"
    imp = gates["improvement"]
    assert imp.verdict == "fail" and imp.note == "a tie: every gated metric equals the champion's"
    # worse within tolerance everywhere, better nowhere: still no improvement
    slightly = {**MAIN, HE_LOSS: "4.298"}
    gates = by_name(registry.evaluate_gates(CFG, slightly, MAIN))
    assert gates[HE_LOSS].verdict == "pass" and gates["improvement"].verdict == "fail"
    assert gates["improvement"].note == "no gated metric better than the champion's"
    # nothing comparable (the champion has none of the gated metrics) is no improvement either
    bare = {k: v for k, v in MAIN.items() if not k.startswith("eval.")}
    lax = RegisterConfig(on_missing="skip")
    assert by_name(registry.evaluate_gates(lax, MAIN, bare))["improvement"].verdict == "fail"
    off = RegisterConfig(require_improvement=False)
    assert "improvement" not in by_name(registry.evaluate_gates(off, zero, dict(zero)))


def test_an_experiment_version_fails_unless_named():
    exp = tags(phi1__experiment="bushy-tuft")
    plain = by_name(registry.evaluate_gates(CFG, exp, None))["experiment"]
    assert plain.verdict == "fail" and plain.candidate == "bushy-tuft" and plain.metric == "phi1.experiment"
    assert by_name(registry.evaluate_gates(CFG, exp, None, named=True))["experiment"].verdict == "pass"
    assert by_name(registry.evaluate_gates(CFG, tags(), None))["experiment"].note == "main line"


def test_gates_fail_a_worse_metric_failed_validation_and_left_contamination():
    cfg = RegisterConfig(contamination_tau=0.8)
    cand = tags(eval__mbpp__pass_at_1="0.2", validation__status="failed")
    gates = by_name(registry.evaluate_gates(cfg, cand, tags()))
    assert gates["eval.mbpp.pass_at_1"].verdict == "fail"
    assert gates["validation"].verdict == "fail"
    # pruned at 0.9 (3 removed); 7 items scored >= 0.8, so 4 are left at 0.8
    assert gates["contamination"].verdict == "fail" and gates["contamination"].candidate == 4
    assert registry.contamination_left(cand, 0.95) == 0
    assert registry.contamination_left(cand, 0.85) is None  # not in the sweep


def test_missing_inputs_fail_only_when_the_champion_has_them_by_default():
    cand = tags(probe__pass_rate=None)
    g = by_name(registry.evaluate_gates(CFG, cand, tags(probe__pass_rate=None)))["probe.pass_rate"]
    assert g.verdict == "skip" and "not available" in g.note
    assert by_name(registry.evaluate_gates(CFG, cand, tags()))["probe.pass_rate"].verdict == "fail"
    strict = RegisterConfig(on_missing="fail")
    assert by_name(registry.evaluate_gates(strict, cand, None))["probe.pass_rate"].verdict == "fail"
    lax = RegisterConfig(on_missing="skip")
    assert by_name(registry.evaluate_gates(lax, cand, tags()))["probe.pass_rate"].verdict == "skip"


# --------------------------------------------------------------------------- promote, real registry


def test_the_first_version_is_promoted_by_phi1_promote_when_the_gates_allow(workdir):
    add_version(workdir, MAIN)
    c = registry.client()
    assert "champion" not in c.get_registered_model("phi1").aliases
    res = promote_cli()
    assert res.exit_code == 0, res.output
    assert "phi1 v1 is now champion" in res.output and alias(c, "champion") == "1"
    record = json.loads(c.get_model_version("phi1", "1").tags["phi1.decision"])
    assert record["accepted"] and record["previous_champion"] is None and not record["named"]
    assert {g["name"] for g in record["gates"]} >= {"experiment", "validation", HE_LOSS, "improvement"}


def test_a_worse_solution_loss_is_refused_with_one_line_per_gate(workdir):
    add_version(workdir, MAIN)
    registry.promote(CFG)
    add_version(workdir, WORSE)
    res = promote_cli()
    assert res.exit_code == 1
    out = res.output
    assert ("refused: eval.humaneval.solution_loss (lower is better): 4.317 against the champion's 4.293, "
            "rule <= champion + 0.01: worse by 0.024 > tolerance 0.01") in out
    assert "refused: eval.mbpp.solution_loss (lower is better): 5.531 against the champion's 5.462" in out
    assert ("refused: improvement: no gated metric better than the champion's "
            "(rule: a gated metric strictly better than the champion's, or no champion)") in out
    assert out.count("refused: ") == 3
    c = registry.client()
    assert alias(c, "champion") == "1" and alias(c, "challenger") == "2"
    record = json.loads(c.get_model_version("phi1", "2").tags["phi1.decision"])
    assert not record["accepted"] and record["failing"] == [HE_LOSS, MBPP_LOSS, "improvement"]
    he = next(g for g in record["gates"] if g["name"] == HE_LOSS)
    assert he == {"name": HE_LOSS, "verdict": "fail", "candidate": 4.317, "champion": 4.293,
                  "rule": "<= champion + 0.01", "note": "worse by 0.024 > tolerance 0.01",
                  "metric": HE_LOSS, "direction": "lower"}


def test_a_tie_at_zero_is_refused_by_promote(workdir):
    add_version(workdir, MAIN)
    registry.promote(CFG)
    add_version(workdir, dict(MAIN))  # a retrain that changed nothing measurable
    decision = registry.promote(CFG)
    assert not decision.accepted and decision.failing == ["improvement"]
    assert alias(registry.client(), "champion") == "1"


def test_plain_promote_refuses_an_experiment_and_accepts_it_when_named(workdir):
    add_version(workdir, MAIN)
    registry.promote(CFG)
    add_version(workdir, {**MAIN, HE_LOSS: "4.1", "phi1.experiment": "bushy-tuft"})
    res = promote_cli()
    assert res.exit_code == 1
    refusals = [line for line in res.output.splitlines() if line.startswith("refused: ")]
    assert refusals == ["refused: experiment: v2 was registered by experiment 'bushy-tuft'; "
                        "only naming it lifts this gate: phi1 promote --version 2"]
    c = registry.client()
    assert alias(c, "champion") == "1"
    res = promote_cli("--version", "2")
    assert res.exit_code == 0, res.output
    assert alias(c, "champion") == "2"
    record = json.loads(c.get_model_version("phi1", "2").tags["phi1.decision"])
    assert record["named"] and record["accepted"]
    assert next(g for g in record["gates"] if g["name"] == "experiment")["note"] == "experiment, named explicitly"


def _inputs(root: Path, humaneval: float, mbpp: float = 0.4, loss: float = 4.3) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/eval.json").write_text(json.dumps(
        {"phi1": {"humaneval": {"pass@1": humaneval, "n_tasks": 10, "solution_loss": loss},
                  "mbpp": {"pass@1": mbpp, "n_tasks": 10, "solution_loss": loss + 1}}}))
    (root / "reports/validation").mkdir(parents=True, exist_ok=True)
    (root / "reports/validation/summary.json").write_text(json.dumps({"raw": {"success": True, "evaluated": 4, "failed": 0}}))
    (root / "params.yaml").write_text("register: {}\n")


@pytest.mark.slow
def test_register_never_moves_champion_promote_does_and_rollback_restores(workdir, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("PHI1_VARIANT", raising=False)
    make_tiny_model(workdir / "checkpoints/phi1")
    train_id = log_as_trained(workdir / "checkpoints/phi1")  # what finetune with log_model: true leaves
    c = registry.client()
    _inputs(workdir, 0.5)
    first = register(CFG)["phi1"]  # promote: off, the default
    assert {k: first[k] for k in ("version", "registered", "promoted", "promotable", "gates_failed", "champion")} == {
        "version": 1, "registered": 1, "promoted": 0, "promotable": 1, "gates_failed": 0, "champion": None}
    assert first["gates"][HE_LOSS] == {"metric": HE_LOSS, "direction": "lower", "candidate": 4.3, "champion": None,
                                       "rule": "<= champion + 0.01", "verdict": "pass", "note": "no champion yet"}
    assert json.loads(Path("metrics/register.json").read_text())["phi1"] == first
    assert "champion" not in c.get_registered_model("phi1").aliases and alias(c, "challenger") == "1"
    assert c.get_model_version("phi1", "1").run_id == train_id
    check = json.loads(c.get_model_version("phi1", "1").tags["phi1.decision"])
    assert check["dry_run"] and check["accepted"]
    assert promote_cli().exit_code == 0 and alias(c, "champion") == "1"

    _inputs(workdir, 0.5, loss=4.6)  # a worse solution loss, pass@1 unchanged
    worse = register(CFG)["phi1"]
    assert (worse["promoted"], worse["promotable"], worse["champion"]) == (0, 0, 1)
    assert worse["gates"][HE_LOSS]["verdict"] == "fail" and worse["gates"]["improvement"]["verdict"] == "fail"
    assert alias(c, "champion") == "1" and alias(c, "challenger") == "2"
    res = promote_cli("--version", "2")  # named, but named does not lift the other gates
    assert res.exit_code == 1 and "refused: eval.humaneval.solution_loss (lower is better)" in res.output

    # A better model from `dvc exp run`, even with promote: require, is not promoted by the stage.
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-tuft")
    _inputs(workdir, 0.6, loss=4.0)
    with pytest.raises(Phi1Error, match="v3 refused by gates: experiment: v3 was registered by experiment 'bushy-tuft'"):
        register(RegisterConfig(base_model_name=None, base_checkpoint=None, promote="require"))
    exp = json.loads(Path("metrics/register.json").read_text())["phi1"]
    assert exp["experiment"] == "bushy-tuft" and exp["promoted"] == 0 and exp["gates"]["experiment"]["verdict"] == "fail"
    v3 = c.get_model_version("phi1", "3").tags
    assert v3["phi1.experiment"] == "bushy-tuft" and v3["phi1.variant"] == "bushy-tuft"
    assert alias(c, "champion") == "1"
    monkeypatch.delenv("DVC_EXP_NAME")

    # The main line's, with promote: try, is promoted inside the stage.
    main = register(RegisterConfig(base_model_name=None, base_checkpoint=None, promote="try"))["phi1"]
    assert main["version"] == 4 and main["promoted"] == 1 and "experiment" not in main
    assert alias(c, "champion") == "4"
    record = json.loads(c.get_model_version("phi1", "4").tags["phi1.decision"])
    assert record["accepted"] and not record["dry_run"] and record["previous_champion"] == "1"
    res = promote_cli("--version", "2", "--dry-run")
    assert res.exit_code == 1 and alias(c, "champion") == "4"

    res = CliRunner().invoke(app, ["rollback"])
    assert res.exit_code == 0, res.output
    assert "champion v4 -> v1" in res.output
    assert alias(c, "champion") == "1"
    with pytest.raises(Phi1Error, match="no previous champion"):
        registry.rollback("phi1")

    import mlflow

    pipe = mlflow.transformers.load_model("models:/phi1@champion")
    text = pipe("def add(a, b):", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("def add(a, b):") and len(text) > len("def add(a, b):")
    pyfunc = mlflow.pyfunc.load_model("models:/phi1@champion")
    out = pyfunc.predict(["def greet(name):"], params={"max_new_tokens": 6})
    assert isinstance(out[0], str) and out[0]


@pytest.mark.slow
def test_two_promotions_at_once_leave_one_consistent_champion(workdir):
    _inputs(workdir, 0.5)  # params.yaml
    add_version(workdir, MAIN)
    add_version(workdir, dict(MAIN))
    # hold the lock so both promotions are waiting on it, then let them race
    lock = registry.lock_path()
    import fcntl

    fh = open(lock, "a+")
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    env = {**os.environ}
    # equal metrics: whichever comes second is a tie, so the improvement rule is off here
    procs = [subprocess.Popen([sys.executable, "-m", "phi1.cli", "promote", "--version", v,
                               "-S", "register.require_improvement=false"], cwd=workdir, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for v in ("1", "2")]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        waiting = sum(any(os.path.realpath(f"/proc/{p.pid}/fd/{fd}") == str(lock.resolve())
                          for fd in os.listdir(f"/proc/{p.pid}/fd")) for p in procs if p.poll() is None)
        if waiting == 2:
            break
        time.sleep(0.2)
    assert waiting == 2, [p.communicate() for p in procs]
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    fh.close()
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    c = registry.client()
    champion = alias(c, "champion")
    history = json.loads(c.get_registered_model("phi1").tags["phi1.champion_history"])
    assert sorted(history) == ["1", "2"] and history[-1] == champion
    first, second = history
    assert json.loads(c.get_model_version("phi1", first).tags["phi1.decision"])["previous_champion"] is None
    assert json.loads(c.get_model_version("phi1", second).tags["phi1.decision"])["previous_champion"] == first


def test_promotion_lock_of_a_remote_store_is_one_per_server_in_the_user_cache(tmp_path, monkeypatch):
    """A server has no local file to lock beside: one lock per store URI in the user's cache,
    the same from any working directory, so promotions from one machine are serialised."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team.example:5000")
    monkeypatch.chdir(tmp_path)
    lock = registry.lock_path()
    assert lock.parent == tmp_path / "cache" / "phi1" and lock.name.startswith("promote-")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team.example:5000/")
    assert registry.lock_path() == lock
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://other.example:5000")
    assert registry.lock_path() != lock
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert registry.lock_path() == tmp_path / "mlflow.db.promote.lock"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team.example:5000")
    with registry.registry_lock():
        assert lock.is_file() and not list((tmp_path / "elsewhere").iterdir())
