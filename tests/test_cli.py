"""The CLI's promise: every bad input is one `error:` line naming it, exit code 2, and
the traceback only under `--debug` / PHI1_DEBUG=1."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from phi1.cli import app


def _one_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("key, value, needle", [
    ("ingest.min_chars", -10, "ingest.min_chars must be >= 0"),
    ("pretrain.grad_clip", -1, "pretrain.grad_clip must be >= 0"),
    ("pretrain.lr", 0, "pretrain.lr must be > 0"),
    ("pretrain.lr", -0.1, "pretrain.lr must be > 0"),  # not reported as a bad min_lr
    ("finetune.lr", 0, "finetune.lr must be > 0"),
    ("pretrain.model_overrides", {"num_hidden_layers": -1}, "pretrain.model_overrides.num_hidden_layers must be a positive integer"),
    ("pretrain.model_overrides", {"hidden_size": 1.5}, "pretrain.model_overrides.hidden_size must be a positive integer"),
    ("pretrain.model_overrides", {"resid_pdrop": 2}, "pretrain.model_overrides.resid_pdrop must be in [0, 1)"),
])
def test_bad_params_are_rejected_by_their_own_key(tmp_path, key, value, needle):
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")  # every default, plus the one bad override
    result = CliRunner().invoke(app, ["params", key.split(".")[0], "--params", str(params),
                                      "-S", f"{key}={json.dumps(value)}"])
    _one_line(result, needle)


@pytest.fixture
def samples(tmp_path):
    p = tmp_path / "samples.jsonl"
    p.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return False\n"}) + "\n")
    return p


@pytest.mark.parametrize("args, needle", [
    (["--timeout", "-1"], "--timeout must be a positive number of seconds, got -1.0"),
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--memory-bytes", "0"], "--memory-bytes must be positive"),
    (["--k", "0,1"], "--k: expected positive integers"),
])
def test_evaluate_execute_checks_its_values_before_work(tmp_path, samples, args, needle):
    out = tmp_path / "results.jsonl"
    result = CliRunner().invoke(app, ["evaluate", "execute", "--benchmark", "humaneval", "--samples", str(samples),
                                      "--out", str(out), "--allow-partial", *args])
    _one_line(result, needle)
    assert not out.exists()


def test_samples_that_are_not_utf8_name_the_line(tmp_path, samples):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(samples.read_bytes() + b'{"task_id": "HumanEval/1", "completion": "\xff\xfe"}\n')
    result = CliRunner().invoke(app, ["evaluate", "execute", "--benchmark", "humaneval", "--samples", str(bad),
                                      "--out", str(tmp_path / "r.jsonl"), "--allow-partial"])
    _one_line(result, f"{bad} line 2: not UTF-8")


def test_an_os_error_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"sources": [
        {"name": "code", "kind": "local", "paths": [str(tmp_path / "nothing-here")]}]}}))
    # a missing source is a Phi1Error; a missing params file is an OSError-shaped one
    result = CliRunner().invoke(app, ["params", "ingest", "--params", str(tmp_path / "missing.yaml")])
    _one_line(result, "missing.yaml")
    monkeypatch.setenv("PHI1_DEBUG", "1")
    result = CliRunner().invoke(app, ["params", "ingest", "--params", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0 and result.exception is not None  # raised, traceback and all
    monkeypatch.delenv("PHI1_DEBUG")
    result = CliRunner().invoke(app, ["--debug", "params", "ingest", "--params", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0 and result.exception is not None


def test_a_read_only_output_is_one_line(tmp_path, samples):
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here: needs root")
    try:
        result = CliRunner().invoke(app, ["evaluate", "execute", "--benchmark", "humaneval", "--samples", str(samples),
                                          "--out", str(ro / "results.jsonl"), "--allow-partial", "--workers", "1"])
        _one_line(result, f"cannot write {ro}", "Read-only file system [EROFS]")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
