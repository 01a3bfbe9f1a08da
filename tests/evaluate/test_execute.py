"""Scoring sample files, through the library and the `phi1 evaluate execute` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.errors import Phi1Error
from phi1.engines import benchmarks
from phi1.evaluate.execute import parse_ks, read_samples, score
from tests.no_namespaces import run_without_namespaces

HE = benchmarks.load("humaneval")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_prints_only_one_json_object_and_writes_results(tmp_path):
    tasks = HE[:5]
    rows = []
    for t in tasks:
        rows.append({"task_id": t.task_id, "completion": t.canonical_solution, "model": "ref"})
        rows.append({"task_id": t.task_id, "completion": "    return None\n", "model": "broken"})
    samples = write_jsonl(tmp_path / "s.jsonl", rows)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "phi1.cli", "evaluate", "execute", "--benchmark", "humaneval",
         "--samples", str(samples), "--out", str(out), "--workers", "2", "--k", "1,2,10", "--allow-partial"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert summary["benchmark"] == "humaneval" and summary["n_tasks"] == 5 and summary["n_samples"] == 10
    assert summary["pass@1"] == pytest.approx(0.5) and summary["pass@2"] == pytest.approx(1.0)
    assert "pass@10" not in summary  # above every task's 2 samples
    assert summary["statuses"] == {"passed": 5, "failed": 5}
    assert summary["isolation"] == "namespaces"
    # Calibrated by default: the five references measured, their limits the 3 s floor.
    limits = summary["time_limits"]
    assert (limits["mode"], limits["floor"], limits["factor"], limits["n_tasks"], limits["measured"]) == (
        "calibrated", 3.0, 4.0, 5, 5)
    assert limits["cpu_limit_max"] == 3.0 and limits["cache"].startswith(str(tmp_path / "cache" / "phi1"))
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["isolation"] == "namespaces" for r in results)
    assert all((r["cpu_limit"], r["wall_limit"]) == (3.0, 15.0) for r in results)
    assert [r["model"] for r in results] == [r["model"] for r in rows]  # every sample, in order, fields kept
    assert all(r["passed"] == (r["model"] == "ref") for r in results)
    assert all(r["result"] == "passed" for r in results if r["passed"])
    assert all(r["result"].startswith("failed: ") for r in results if not r["passed"])


def test_mbpp_task_ids_as_integers_or_strings(tmp_path):
    mbpp = benchmarks.load("mbpp", "validation")
    rows = [{"task_id": int(t.task_id.split("/")[1]) if i % 2 else t.task_id, "completion": t.canonical_solution}
            for i, t in enumerate(mbpp)]
    samples = read_samples(write_jsonl(tmp_path / "s.jsonl", rows), "mbpp", mbpp, "validation")
    scored = score(samples, mbpp, (1,), workers=2, timeout=10)
    assert scored.summary["n_tasks"] == 90 and scored.summary["pass@1"] == pytest.approx(89 / 90)
    failing = [r["task_id"] for r in scored.rows if not r["passed"]]
    assert failing == [596]  # sys.getsizeof differs from when MBPP was written (see data/mbpp/README.md)
    assert [r["task_id"] for r in scored.rows] == [r["task_id"] for r in rows]
    per_task = {p["task_id"]: p for p in scored.per_task}
    assert per_task["Mbpp/596"] == {"task_id": "Mbpp/596", "n_samples": 1, "n_passed": 0, "pass@1": 0.0}


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"task_id": "HumanEval/0", "completion": "x"}', "{not json"], "s.jsonl line 2: not valid JSON"),
        (['{"task_id": "HumanEval/0"}'], "s.jsonl line 1: a sample needs `task_id` and `completion`"),
        (['["HumanEval/0", "x"]'], "s.jsonl line 1: a sample needs"),
        (['{"task_id": "HumanEval/0", "completion": 3}'], "s.jsonl line 1: `completion` must be a string"),
        (['{"task_id": "HumanEval/0", "completion": ""}', '', '{"task_id": "HumanEval/999", "completion": ""}'],
         "s.jsonl line 3: unknown task id 'HumanEval/999'"),
        ([], "s.jsonl: no samples"),
    ],
)
def test_bad_sample_files_name_the_line(tmp_path, lines, message):
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(Phi1Error) as info:
        read_samples(path, "humaneval", HE)
    assert message in str(info.value)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    runner = CliRunner()
    partial = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "Mbpp/11", "completion": ""}])
    base = ["evaluate", "execute", "--samples", str(partial), "--out", str(tmp_path / "r.jsonl")]
    cases = [
        (base + ["--benchmark", "mbpp"], "error: no samples for 499 of 500 tasks (first: Mbpp/12); pass --allow-partial"),
        (base + ["--benchmark", "mbpp", "--split", "validation"], "unknown task id 'Mbpp/11' (not in MBPP split validation)"),
        (base + ["--benchmark", "apps"], "error: unknown benchmark 'apps'"),
        (base + ["--benchmark", "mbpp", "--k", "1,x"], "error: --k: expected positive integers"),
        (base + ["--benchmark", "mbpp", "--allow-partial", "--workers", "0"], "error: --workers must be >= 1"),
        (base + ["--benchmark", "mbpp", "--allow-partial", "--timeout", "0"], "error: --timeout must be a positive"),
        (base + ["--benchmark", "mbpp", "--allow-partial", "--timeout-floor", "0"],
         "error: --timeout-floor must be a positive number, got 0.0"),
        (["evaluate", "execute", "--benchmark", "mbpp", "--samples", str(tmp_path / "nope.jsonl"),
          "--out", str(tmp_path / "r.jsonl")], "nope.jsonl"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r.jsonl").exists()


def test_cli_without_namespaces_fails_closed_unless_unsafe_guard(tmp_path):
    """A machine that allows no namespaces (a real one: its namespace limits are 0): no
    program runs and nothing is written, unless --unsafe-guard, which the results record."""
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"task_id": t.task_id, "completion": c} for t in HE[:2] for c in (t.canonical_solution, "    return None\n")])
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "phi1.cli", "evaluate", "execute", "--benchmark", "humaneval", "--samples",
           str(samples), "--out", str(out), "--k", "1", "--allow-partial", "--workers", "1"]
    refused = run_without_namespaces(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: sandbox: namespace isolation unavailable: [Errno ")
    assert refused.stderr.count("\n") == 1  # one line
    assert "to enable it" in refused.stderr and "--unsafe-guard" in refused.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [samples]

    allowed = run_without_namespaces(cmd + ["--unsafe-guard"], capture_output=True, text=True, timeout=120)
    assert allowed.returncode == 0, allowed.stderr
    summary = json.loads(allowed.stdout)
    assert summary["isolation"] == "guard" and summary["statuses"] == {"passed": 2, "failed": 2}
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["passed"] for r in results] == [True, False, True, False]
    assert all(r["isolation"] == "guard" for r in results)
    assert "UNSAFE" in allowed.stderr


def test_parse_ks():
    assert parse_ks("1,10, 100") == (1, 10, 100)
    for bad in ("", "0", "a", "1,-2"):
        with pytest.raises(Phi1Error):
            parse_ks(bad)
