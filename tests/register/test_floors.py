"""Promotion floors: absolute gates on pass@1 per benchmark, the probe pass rate and the
solution loss per benchmark, whatever the champion; the defaults let the demo model through."""

from __future__ import annotations

import json

import pytest

from phi1.config import ConfigError, RegisterConfig, load_stage_config
from phi1.engines import model_registry as registry
from phi1.register.stage import decision_metrics

# The demo's phi1 (metrics/eval.json, metrics/probe.json): nothing passes, losses 4.29 / 5.46.
DEMO = {"validation.status": "passed", "eval.humaneval.pass_at_1": "0.0", "eval.mbpp.pass_at_1": "0.0",
        "probe.pass_rate": "0.0", "eval.humaneval.solution_loss": "4.293", "eval.mbpp.solution_loss": "5.462"}
FLOORS = ["min.eval.humaneval.pass_at_1", "min.eval.mbpp.pass_at_1", "min.probe.pass_rate",
          "max.eval.humaneval.solution_loss", "max.eval.mbpp.solution_loss"]


def _gates(cfg, cand, champ=None):
    return {g.name: g for g in registry.evaluate_gates(cfg, cand, champ)}


def test_the_default_floors_pass_the_demo_model_and_are_in_the_decision():
    cfg = RegisterConfig(contamination_tau=None)
    gates = _gates(cfg, DEMO)
    assert [n for n in gates if n.startswith(("min.", "max."))] == FLOORS
    assert all(gates[n].verdict == "pass" for n in FLOORS)
    g = gates["max.eval.humaneval.solution_loss"]
    assert (g.metric, g.direction, g.candidate, g.rule) == ("eval.humaneval.solution_loss", "lower", 4.293, "<= 8")
    assert gates["min.probe.pass_rate"].rule == ">= 0"
    decision = registry.Decision("promote", "phi1", "1", None, True, True, list(gates.values()))
    recorded = decision_metrics(decision)["gates"]  # what metrics/register.json gets
    assert recorded["min.eval.mbpp.pass_at_1"] == {"metric": "eval.mbpp.pass_at_1", "direction": "higher",
                                                   "candidate": 0.0, "champion": None, "rule": ">= 0",
                                                   "verdict": "pass", "note": ""}


def test_a_candidate_under_a_floor_is_refused_with_one_line_per_gate_whatever_the_champion():
    cfg = RegisterConfig(contamination_tau=None, min_pass_at_1={"humaneval": 0.1}, min_probe_pass_rate=0.2,
                         max_solution_loss={"humaneval": 4.0, "mbpp": 6.0})
    gates = _gates(cfg, DEMO, champ={**DEMO, "eval.humaneval.solution_loss": "4.5"})  # better than the champion
    assert gates["eval.humaneval.solution_loss"].verdict == gates["improvement"].verdict == "pass"
    failing = [g for g in gates.values() if g.verdict == "fail"]
    assert [g.name for g in failing] == ["min.eval.humaneval.pass_at_1", "min.probe.pass_rate",
                                         "max.eval.humaneval.solution_loss"]
    assert "min.eval.mbpp.pass_at_1" not in gates and gates["max.eval.mbpp.solution_loss"].verdict == "pass"
    decision = registry.Decision("promote", "phi1", "2", "1", False, False, list(gates.values()))
    assert registry.refusals(decision) == [
        "min.eval.humaneval.pass_at_1: eval.humaneval.pass_at_1 = 0, rule eval.humaneval.pass_at_1 >= 0.1: "
        "under the floor by 0.1",
        "min.probe.pass_rate: probe.pass_rate = 0, rule probe.pass_rate >= 0.2: under the floor by 0.2",
        "max.eval.humaneval.solution_loss: eval.humaneval.solution_loss = 4.293, "
        "rule eval.humaneval.solution_loss <= 4: over the ceiling by 0.293",
    ]
    # exactly at the bound passes; a missing metric follows on_missing like every gate
    assert _gates(cfg, {**DEMO, "eval.humaneval.solution_loss": "4.0"})["max.eval.humaneval.solution_loss"].verdict == "pass"
    gone = {k: v for k, v in DEMO.items() if k != "probe.pass_rate"}
    assert _gates(cfg, gone)["min.probe.pass_rate"].verdict == "skip"
    assert _gates(cfg, gone, DEMO)["min.probe.pass_rate"].verdict == "fail"
    assert "min.probe.pass_rate" not in _gates(RegisterConfig(min_probe_pass_rate=None), DEMO)


def test_floor_params_are_checked(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("register: {}\n")
    assert load_stage_config("register", params).max_solution_loss == {"humaneval": 8.0, "mbpp": 8.0}
    cfg = load_stage_config("register", params, ["register.min_pass_at_1.humaneval=0.25"])
    assert cfg.min_pass_at_1 == {"humaneval": 0.25}  # the key given: the section names no other
    with pytest.raises(ConfigError, match=r"register.min_pass_at_1.humaneval must be in \[0, 1\], got 2"):
        load_stage_config("register", params, ["register.min_pass_at_1.humaneval=2"])
    with pytest.raises(ConfigError, match="register.max_solution_loss: 'apps' is not a benchmark"):
        RegisterConfig(max_solution_loss={"apps": 3.0})
    with pytest.raises(ConfigError, match="register.max_solution_loss.mbpp must be > 0"):
        RegisterConfig(max_solution_loss={"mbpp": 0})
    with pytest.raises(ConfigError, match="register.min_probe_pass_rate must be in"):
        RegisterConfig(min_probe_pass_rate=1.5)


def test_phi1_promote_refuses_under_a_floor_and_promotes_at_the_defaults(workdir):
    """End to end on a real sqlite registry (the register tests' fixtures): the same
    version is refused with a raised floor, one line per failing gate, and promoted with
    the default floors."""
    from tests.engines.test_model_registry import add_version, promote_cli

    add_version(workdir, {**DEMO, "contamination.tau": "0.9", "contamination.sweep": "[]"})
    res = promote_cli("-S", "register.min_pass_at_1.mbpp=0.05", "-S", "register.max_solution_loss.mbpp=5")
    assert res.exit_code == 1
    refused = [line for line in res.output.splitlines() if line.startswith("refused: ")]
    assert refused == [
        "refused: min.eval.mbpp.pass_at_1: eval.mbpp.pass_at_1 = 0, rule eval.mbpp.pass_at_1 >= 0.05: "
        "under the floor by 0.05",
        "refused: max.eval.mbpp.solution_loss: eval.mbpp.solution_loss = 5.462, rule eval.mbpp.solution_loss <= 5: "
        "over the ceiling by 0.462"]
    c = registry.client()
    record = json.loads(c.get_model_version("phi1", "1").tags[registry.DECISION_TAG])
    assert record["failing"] == ["min.eval.mbpp.pass_at_1", "max.eval.mbpp.solution_loss"]
    res = promote_cli()
    assert res.exit_code == 0, res.output
    assert "phi1 v1 is now champion" in res.output
    record = json.loads(c.get_model_version("phi1", "1").tags[registry.DECISION_TAG])
    assert {g["name"]: g["verdict"] for g in record["gates"] if g["name"] in FLOORS} == dict.fromkeys(FLOORS, "pass")
