"""The `register` stage's lineage and experiment tags from real input files, its config, and its errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from phi1.config import ConfigError, RegisterConfig, load_stage_config
from phi1.errors import Phi1Error
from phi1.register.stage import experiment_tags, lineage_tags, run


def test_lineage_tags_hold_hashes_status_contamination_and_metrics(workdir):
    (workdir / "checkpoints/phi1").mkdir(parents=True)
    (workdir / "checkpoints/phi1/config.json").write_text("{}")
    (workdir / "params.yaml").write_text("register: {}\n")
    lock = {"schema": "2.0", "stages": {
        "ingest": {"outs": [{"path": "data/raw", "md5": "aaa.dir"}]},
        "finetune": {"outs": [{"path": "checkpoints/phi1", "md5": "bbb.dir"}]}}}
    (workdir / "dvc.lock").write_text(yaml.safe_dump(lock))
    (workdir / "metrics").mkdir()
    (workdir / "metrics/eval.json").write_text(json.dumps(
        {"phi1": {"humaneval": {"pass@1": 0.25, "n_tasks": 4}}, "base": {"humaneval": {"pass@1": 0.0}}}))
    (workdir / "metrics/probe.json").write_text(json.dumps({"phi1": {"pass_rate": 0.5, "pygame": {"pass_rate": 1.0}}}))
    (workdir / "reports/validation").mkdir(parents=True)
    (workdir / "reports/validation/summary.json").write_text(json.dumps(
        {"raw": {"success": True, "evaluated": 3, "failed": 0}, "filtered": {"success": False, "evaluated": 3, "failed": 2}}))
    (workdir / "reports/contamination.json").write_text(json.dumps({
        "tau": 0.9, "at_tau": {"removed": {"exercises": 2}, "tasks_similar": {"humaneval": 1}},
        "sweep": [{"tau": 0.95, "removed": {"exercises": 1}}, {"tau": 0.9, "removed": {"exercises": 2}},
                  {"tau": 0.8, "removed": {"exercises": 5}}]}))

    tags = lineage_tags("checkpoints/phi1")
    assert tags["lineage.dvc.data/raw"] == "aaa.dir"
    assert tags["checkpoint.hash"] == "dvc:bbb.dir"
    assert tags["params.sha256"] == hashlib.sha256(b"register: {}\n").hexdigest()
    assert tags["eval.humaneval.pass_at_1"] == "0.25" and "eval.humaneval.n_tasks" not in tags
    assert tags["probe.pass_rate"] == "0.5" and tags["probe.pygame.pass_rate"] == "1.0"
    assert tags["validation.status"] == "failed" and tags["validation.failed"] == "filtered"
    assert json.loads(tags["contamination.removed"]) == {"exercises": 2}
    assert {r["tau"]: r["removed_total"] for r in json.loads(tags["contamination.sweep"])} == {0.95: 1, 0.9: 2, 0.8: 5}
    assert "git.commit" in tags


def test_missing_inputs_leave_their_tags_out(workdir):
    (workdir / "ck").mkdir()
    tags = lineage_tags("ck", params_path="nope.yaml", lock_path="nope.lock")
    assert not any(k.startswith(("eval.", "probe.", "validation.", "contamination.", "lineage.", "params.")) for k in tags)
    assert tags["checkpoint.hash"].startswith("computed:")


def test_bad_json_and_missing_checkpoint_are_one_line_errors(workdir):
    with pytest.raises(Phi1Error, match="checkpoints/phi1 is not a Hugging Face model folder"):
        run(RegisterConfig(), "metrics/register.json", "params.yaml", "dvc.lock", None, None, None, None)
    (workdir / "ck").mkdir()
    (workdir / "bad.json").write_text("{nope")
    with pytest.raises(Phi1Error, match="bad.json: not valid JSON"):
        lineage_tags("ck", eval_path="bad.json")


def test_experiment_runs_are_tagged_and_the_main_line_is_not(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("PHI1_VARIANT", raising=False)
    assert experiment_tags() == {}
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-tuft")  # set by `dvc exp run`, queued or not
    assert experiment_tags() == {"phi1.experiment": "bushy-tuft", "phi1.variant": "bushy-tuft"}
    monkeypatch.setenv("PHI1_VARIANT", "filtered-seed7")  # set by `phi1 ablate`; it wins
    assert experiment_tags() == {"phi1.experiment": "filtered-seed7", "phi1.variant": "filtered", "phi1.seed": "7"}


def test_promote_is_off_by_default_and_every_gate_metric_has_a_direction(tmp_path):
    cfg = RegisterConfig()
    assert cfg.promote == "off" and cfg.require_improvement
    assert cfg.gate_metrics["eval.humaneval.solution_loss"] == cfg.gate_metrics["eval.mbpp.solution_loss"] == "lower"
    assert cfg.gate_metrics["eval.humaneval.pass_at_1"] == "higher"
    params = tmp_path / "params.yaml"
    params.write_text("register: {promote: off}\n")  # YAML 1.1 reads a bare off as false
    assert load_stage_config("register", params).promote == "off"
    assert load_stage_config("register", params, ["register.promote=off"]).promote == "off"
    assert load_stage_config("register", params, ["register.promote=try"]).promote == "try"
    with pytest.raises(ConfigError, match="register.gate_metrics.eval.mbpp.solution_loss: 'down' is not one of"):
        load_stage_config("register", params, ["register.gate_metrics={eval.mbpp.solution_loss: down}"])
    with pytest.raises(ConfigError, match="require_improvement needs at least one gate_metrics entry"):
        RegisterConfig(gate_metrics={})
    assert RegisterConfig(gate_metrics={}, require_improvement=False).gate_metrics == {}


# A Python audit hook sees every name lookup and connect of the process, whatever library
# makes it; the run's own MLflow store is a sqlite file, so any of these is an attempt.
_NO_NET = r"""
import sys
seen = []
def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.connect", "socket.sendto"):
        seen.append(f"{event} {args[1] if event != 'socket.getaddrinfo' else args[0]!r}")
sys.addaudithook(hook)
from phi1.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
open("network.log", "w").write("\n".join(seen))
sys.exit(code)
"""


@pytest.mark.slow
def test_register_makes_no_outbound_attempt_without_an_opt_in(workdir):
    """Run the README way, without the Makefile's environment (no HF_*_OFFLINE), in an empty
    network namespace: phi1 turns the hub off itself, so registering local checkpoints
    finishes promptly and tries no connection and no name lookup."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    from tests.engines.test_model_registry import _inputs
    from tests.tiny_model import log_as_trained, make_tiny_model

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode:
        pytest.skip("cannot make an empty network namespace here (unshare -n needs root)")
    make_tiny_model(workdir / "checkpoints/phi1")
    log_as_trained(workdir / "checkpoints/phi1")
    _inputs(workdir, 0.5)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE") and not k.startswith("HF_")}
    t0 = time.monotonic()
    done = subprocess.run(["unshare", "-n", sys.executable, "-c", _NO_NET, "register", "-S",
                           "register.base_model_name=null", "-S", "register.base_checkpoint=null"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "network.log").read_text() == ""
    assert time.monotonic() - t0 < 120  # no minutes of hub retries
