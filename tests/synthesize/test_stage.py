import ast
import json
import sys

import mlflow
import pytest

from phi1.config import SynthesizeConfig
from phi1.io import read_table
from phi1.synthesize.stage import EXERCISES_SCHEMA, TEXTBOOK_SCHEMA, run
from phi1.engines.markdown import python_blocks
from tests.no_namespaces import run_without_namespaces


@pytest.mark.slow
def test_extractive_stage_writes_checked_diverse_outputs(workdir, filtered):
    cfg = SynthesizeConfig(n_textbook=8, n_exercises=25, seed=11, check_workers=2)
    metrics = run(cfg, filtered, workdir / "textbook", workdir / "exercises", workdir / "metrics.json", progress=False)

    ex = read_table(workdir / "exercises")
    tb = read_table(workdir / "textbook")
    assert ex.schema.equals(EXERCISES_SCHEMA) and tb.schema.equals(TEXTBOOK_SCHEMA)
    rows = ex.to_pylist()
    names = [r["function_name"] for r in rows]
    assert "wrong_double" not in names  # its docstring example fails in the sandbox
    assert metrics["exercises"]["dropped"]["examples_failed"] >= 1
    assert "count_vowels" in names or len(rows) == 25
    for r in rows:
        ast.parse(r["prompt"] + r["solution"] + "\n" + r["tests"])
        assert r["backend"] == "extractive" and r["model"] == "extractive-v1" and r["source_id"]
        assert r["prompt"].rstrip().endswith(('"""', "'''"))
    assert len(set(names)) == len(names)  # max_per_function_name = 1
    assert len({r["id"] for r in rows}) == len(rows)
    for r in tb.to_pylist():
        blocks = python_blocks(r["text"])
        assert blocks and all(ast.parse(b) for b in blocks)
        assert r["source_ids"] and r["topic"] and r["audience"]

    m = metrics["exercises"]
    assert m["n"] == len(rows) and m["requested"] == 25
    assert m["distinct_function_names"] == len(rows) and m["distinct_topics"] >= 3
    assert 0 <= m["near_duplicate_rate"] <= 1 and -1 <= m["mean_pairwise_similarity"] <= 1
    assert metrics["textbook"]["n"] == tb.num_rows and metrics["textbook"]["code_blocks"] >= tb.num_rows
    assert metrics["mined"]["dropped"]["not_self_contained"] >= 1
    assert metrics["sandbox_isolation"] == "namespaces"

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    run_data = mlflow.search_runs(experiment_names=["phi1-test-data"], filter_string="tags.`phi1.stage` = 'synthesize'")
    assert len(run_data) == 1
    assert run_data.iloc[0]["metrics.exercises.n"] == m["n"]
    assert "metrics.exercises.near_duplicate_rate" in run_data.columns


def test_missing_input_and_bad_topic_file_are_one_line_errors(workdir, filtered):
    from phi1.errors import Phi1Error

    with pytest.raises(Phi1Error, match="input dataset not found: .*nope"):
        run(SynthesizeConfig(), workdir / "nope", workdir / "t", workdir / "e", workdir / "m.json")
    with pytest.raises(Phi1Error, match="topics list not found: .*missing.txt"):
        run(SynthesizeConfig(topics_file=str(workdir / "missing.txt")), filtered, workdir / "t", workdir / "e",
            workdir / "m.json")
    assert not (workdir / "t").exists() and not (workdir / "e").exists()


def _synthesize(workdir, filtered, *extra):
    """`phi1 synthesize` on the test corpus, where the OS allows no namespaces (a real
    condition: the namespace limits are 0)."""
    (workdir / "params.yaml").write_text("synthesize:\n  n_textbook: 4\n  n_exercises: 10\n  seed: 11\n")
    cmd = [sys.executable, "-m", "phi1.cli", "synthesize", "--filtered", str(filtered), "--textbook", "tb",
           "--exercises", "ex", "--metrics", "m.json", *extra]
    return run_without_namespaces(cmd, capture_output=True, text=True, timeout=300)


def test_without_namespaces_the_checks_fail_closed_before_any_work(workdir, filtered):
    proc = _synthesize(workdir, filtered)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: sandbox: namespace isolation unavailable: [Errno ")
    assert proc.stderr.count("\n") == 1 and "--unsafe-guard (or set synthesize.unsafe_guard: true)" in proc.stderr
    assert not any((workdir / p).exists() for p in ("tb", "ex", "m.json"))
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    assert mlflow.search_runs(experiment_names=["phi1-test-data"], output_format="list") == []


@pytest.mark.slow
def test_without_namespaces_unsafe_guard_checks_under_the_guard_and_says_so(workdir, filtered):
    proc = _synthesize(workdir, filtered, "--unsafe-guard")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((workdir / "m.json").read_text())
    assert metrics["sandbox_isolation"] == "guard"
    assert metrics["exercises"]["dropped"]["examples_failed"] >= 1  # the checks still judged
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["phi1-test-data"], output_format="list")
    assert len(runs) == 1 and runs[0].data.tags["phi1.sandbox"] == "guard"
    assert runs[0].data.params["unsafe_guard"] == "true"
