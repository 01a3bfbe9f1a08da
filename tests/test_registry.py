"""The registry seam against a real sqlite MLflow store and a tiny real model: gates,
promotion, refusal of a worse model, rollback, two promotions at once, loading the champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phi1 import registry
from phi1.cli import app
from phi1.config import RegisterConfig
from phi1.errors import Phi1Error
from phi1.register import run as register
from tests.tiny_model import make_tiny_model

CFG = RegisterConfig(base_model_name=None, base_checkpoint=None, promote="try")


def tags(**kw) -> dict[str, str]:
    base = {"validation.status": "passed", "contamination.tau": "0.9",
            "contamination.sweep": json.dumps([{"tau": 0.95, "removed_total": 1}, {"tau": 0.9, "removed_total": 3},
                                               {"tau": 0.8, "removed_total": 7}]),
            "eval.humaneval.pass_at_1": "0.5", "eval.mbpp.pass_at_1": "0.4", "probe.pass_rate": "0.3"}
    base.update({k.replace("__", "."): v for k, v in kw.items()})
    return {k: v for k, v in base.items() if v is not None}


def alias(c, name: str) -> str:
    return str(c.get_model_version_by_alias("phi1", name).version)


def by_name(gates):
    return {g.name: g for g in gates}


def test_gates_pass_against_no_champion_and_within_tolerance():
    assert all(g.status == "pass" for g in registry.evaluate_gates(CFG, tags(), None))
    cand = tags(eval__humaneval__pass_at_1="0.495")
    gates = by_name(registry.evaluate_gates(CFG, cand, tags()))
    assert gates["eval.humaneval.pass_at_1"].status == "pass"  # 0.005 below, tolerance 0.01


def test_gates_fail_a_worse_metric_failed_validation_and_left_contamination():
    cfg = RegisterConfig(contamination_tau=0.8)
    cand = tags(eval__mbpp__pass_at_1="0.2", validation__status="failed")
    gates = by_name(registry.evaluate_gates(cfg, cand, tags()))
    assert gates["eval.mbpp.pass_at_1"].status == "fail"
    assert gates["validation"].status == "fail"
    # pruned at 0.9 (3 removed); 7 items scored >= 0.8, so 4 are left at 0.8
    assert gates["contamination"].status == "fail" and gates["contamination"].candidate == "4"
    assert registry.contamination_left(cand, 0.95) == 0
    assert registry.contamination_left(cand, 0.85) is None  # not in the sweep


def test_missing_inputs_fail_only_when_the_champion_has_them_by_default():
    cand = tags(probe__pass_rate=None)
    g = by_name(registry.evaluate_gates(CFG, cand, tags(probe__pass_rate=None)))["probe.pass_rate"]
    assert g.status == "skip" and "not available" in g.note
    assert by_name(registry.evaluate_gates(CFG, cand, tags()))["probe.pass_rate"].status == "fail"
    strict = RegisterConfig(on_missing="fail")
    assert by_name(registry.evaluate_gates(strict, cand, None))["probe.pass_rate"].status == "fail"
    lax = RegisterConfig(on_missing="skip")
    assert by_name(registry.evaluate_gates(lax, cand, tags()))["probe.pass_rate"].status == "skip"


def _inputs(root: Path, humaneval: float, mbpp: float = 0.4) -> None:
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/eval.json").write_text(json.dumps(
        {"phi1": {"humaneval": {"pass@1": humaneval, "n_tasks": 10}, "mbpp": {"pass@1": mbpp, "n_tasks": 10}}}))
    (root / "reports/validation").mkdir(parents=True, exist_ok=True)
    (root / "reports/validation/summary.json").write_text(json.dumps({"raw": {"success": True, "evaluated": 4, "failed": 0}}))
    (root / "params.yaml").write_text("register: {}\n")


@pytest.mark.slow
def test_promote_refuses_a_worse_model_rolls_back_and_serves_the_champion(workdir):
    make_tiny_model(workdir / "checkpoints/phi1")
    _inputs(workdir, 0.5)
    assert register(CFG)["phi1"] == {"version": 1, "checkpoint": "checkpoints/phi1", "registered": 1,
                                     "promoted": 1, "gates_failed": 0}
    _inputs(workdir, 0.2)  # a deliberately worse model
    assert register(CFG)["phi1"]["promoted"] == 0
    res = CliRunner().invoke(app, ["promote", "--version", "2"])
    assert res.exit_code == 1
    assert "refused; failing gates: eval.humaneval.pass_at_1" in res.output
    c = registry.client()
    assert alias(c, "champion") == "1"
    assert alias(c, "challenger") == "2"
    refused = json.loads(c.get_model_version("phi1", "2").tags["phi1.decision"])
    assert not refused["accepted"] and refused["failing"] == ["eval.humaneval.pass_at_1"]

    _inputs(workdir, 0.6)
    register(CFG)
    assert alias(c, "champion") == "3"
    record = json.loads(c.get_model_version("phi1", "3").tags["phi1.decision"])
    assert record["accepted"] and record["previous_champion"] == "1"
    assert {g["name"] for g in record["gates"]} >= {"validation", "eval.humaneval.pass_at_1"}
    res = CliRunner().invoke(app, ["promote", "--version", "2", "--dry-run"])
    assert res.exit_code == 1 and alias(c, "champion") == "3"

    res = CliRunner().invoke(app, ["rollback"])
    assert res.exit_code == 0, res.output
    assert "champion v3 -> v1" in res.output
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
    make_tiny_model(workdir / "checkpoints/phi1")
    _inputs(workdir, 0.5)
    off = RegisterConfig(base_model_name=None, base_checkpoint=None, promote="off")
    register(off)
    register(off)
    # hold the lock so both promotions are waiting on it, then let them race
    lock = registry.lock_path()
    import fcntl

    fh = open(lock, "a+")
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-m", "phi1.cli", "promote", "--version", v], cwd=workdir, env=env,
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
