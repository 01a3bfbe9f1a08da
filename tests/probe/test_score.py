"""Scoring probe completions headless: real Xvfb, real sandbox, real pygame and Tk."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.errors import Phi1Error
from phi1.probe.score import read_samples, score
from phi1.probe.suite import load_suite
from tests.no_namespaces import run_without_namespaces

pytestmark = pytest.mark.gui


def _samples(probes, completion=None):
    return [{"probe_id": p.id, "completion": p.reference if completion is None else completion} for p in probes]


def test_reference_solutions_score_100_percent(gui_box):
    probes = load_suite()
    scored = score(_samples(probes), probes, gui_box)
    failed = [r["result"] for r in scored.rows if not r["passed"]]
    assert failed == []
    assert scored.summary["pass_rate"] == 1.0 and scored.summary["api_validity"] == 1.0
    assert scored.summary["n_probes"] == len(probes)
    assert all(r["parses"] and r["imports"] and r["runs"] for r in scored.rows)
    assert set(scored.summary["by_library"]) == {"pygame", "tkinter", "matplotlib"}
    assert all(d["pass_rate"] == 1.0 for d in scored.summary["by_library"].values())


def test_empty_completions_score_0_percent(gui_box):
    probes = load_suite(libraries=("pygame", "tkinter"))
    scored = score(_samples(probes, ""), probes, gui_box)
    assert scored.summary["pass_rate"] == 0.0
    assert scored.summary["api_validity"] is None  # no API used at all
    assert not any(r["passed"] for r in scored.rows)
    assert all(r["parses"] and r["runs"] for r in scored.rows)  # it ran; the check failed


def test_a_nonexistent_api_fails_its_check_and_lowers_api_validity(gui_box):
    probes = load_suite()
    ball = next(p for p in probes if p.id == "pygame/bouncing_ball")
    wrong = ball.reference.replace("pygame.display.set_mode", "pygame.display.setmode")
    scored = score([{"probe_id": ball.id, "completion": c} for c in (ball.reference, wrong)], probes, gui_box)
    good, bad = scored.rows
    assert good["passed"] and not bad["passed"]
    assert "has no attribute 'setmode'" in bad["result"]
    assert not bad["runs"] and bad["imports"]
    assert bad["api_invalid"] == ["pygame.display.setmode"]
    assert bad["api_valid"] / bad["api_chains"] < good["api_valid"] / good["api_chains"] == 1.0
    assert scored.summary["by_library"]["pygame"]["api_validity"] < 1.0


def test_a_tk_program_that_calls_mainloop_is_ended_by_the_check(gui_box):
    probes = load_suite()
    counter = next(p for p in probes if p.id == "tkinter/counter")
    body = counter.reference.replace("    return label", "    root.mainloop()\n    return label")
    assert score([{"probe_id": counter.id, "completion": body}], probes, gui_box).rows[0]["passed"]


def test_cli_score_prints_one_json_object_and_writes_results(workdir):
    probes = load_suite(libraries=("tkinter",))[:2]
    samples = workdir / "s.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in _samples(probes) + _samples(probes[:1], "")))
    result = CliRunner().invoke(app, ["probe", "score", "--samples", str(samples), "--out", "r.jsonl",
                                      "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {"n_probes", "pass_rate", "api_validity", "by_library", "isolation"}
    assert summary["n_probes"] == 2 and summary["pass_rate"] == pytest.approx(2 / 3)
    assert summary["isolation"] == "namespaces"
    rows = [json.loads(line) for line in (workdir / "r.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, True, False]
    assert all(r["isolation"] == "namespaces" for r in rows)


def test_cli_score_without_namespaces_fails_closed_unless_unsafe_guard(tmp_path):
    """A machine that allows no namespaces (a real one: its namespace limits are 0): no
    probe runs and nothing is written, unless --unsafe-guard, which the results record."""
    probes = load_suite(libraries=("tkinter",))[:1]
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in _samples(probes) + _samples(probes, "")))
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "phi1.cli", "probe", "score", "--samples", str(samples), "--out", str(out),
           "--workers", "1"]
    refused = run_without_namespaces(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: sandbox: namespace isolation unavailable: [Errno ")
    assert refused.stderr.count("\n") == 1 and "--unsafe-guard" in refused.stderr
    assert not out.exists()

    allowed = run_without_namespaces(cmd + ["--unsafe-guard"], capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    summary = json.loads(allowed.stdout)
    assert summary["isolation"] == "guard" and summary["pass_rate"] == pytest.approx(1 / 2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["passed"], r["isolation"]) for r in rows] == [(True, "guard"), (False, "guard")]


def test_cli_list_prints_the_suite_as_jsonl():
    result = CliRunner().invoke(app, ["probe", "list"])
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == [p.id for p in load_suite()]


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    ('{"probe_id": "pygame/flag"}', "line 2: a sample needs a string `probe_id` and a string `completion`"),
    ('{"probe_id": "pygame/nope", "completion": ""}', "line 2: unknown probe id 'pygame/nope'"),
])
def test_a_malformed_samples_line_is_an_error_naming_the_line(tmp_path, line, message):
    path = tmp_path / "s.jsonl"
    path.write_text('{"probe_id": "pygame/flag", "completion": ""}\n' + line + "\n")
    with pytest.raises(Phi1Error, match=message):
        read_samples(path, load_suite())
    result = CliRunner().invoke(app, ["probe", "score", "--samples", str(path), "--out", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 2 and "s.jsonl line 2" in result.output
    assert not (tmp_path / "r.jsonl").exists()
