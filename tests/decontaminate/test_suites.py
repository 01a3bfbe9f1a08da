"""The Great Expectations suites of the synthetic and pruned datasets (expectations/*.json)."""

import json

import pytest

from phi1.config import load_stage_config
from phi1.synthesize.stage import EXERCISES_SCHEMA, TEXTBOOK_SCHEMA
from phi1.validate.stage import validate
from tests.conftest import REPO
from tests.decontaminate.conftest import stdlib_exercises, textbook_rows, write

EXPECTATIONS = REPO / "expectations"


def test_pruned_suite_gates_at_the_configured_tau():
    suite = json.loads((EXPECTATIONS / "pruned.json").read_text())
    (gate,) = [e for e in suite["expectations"] if e["type"] == "expect_column_max_to_be_between"]
    assert gate["kwargs"]["column"] == "contamination_score" and gate["kwargs"]["strict_max"] is True
    assert gate["kwargs"]["max_value"] == load_stage_config("decontaminate", REPO / "params.yaml").tau


@pytest.mark.slow
def test_suites_pass_good_data_and_catch_bad(small_corpus, tmp_path):
    exercises = stdlib_exercises(small_corpus)
    textbook = textbook_rows(small_corpus)
    pruned = [dict(r, contamination_score=0.3) for r in exercises]
    bad_pruned = [dict(r, contamination_score=0.95 if i == 0 else 0.1) for i, r in enumerate(exercises)]
    bad_textbook = [dict(textbook[0], text="Only prose here, and quite a lot of it, but never any code at all.")] + textbook[1:]
    data = {
        "textbook": write(tmp_path / "tb", textbook, TEXTBOOK_SCHEMA),
        "exercises": write(tmp_path / "ex", exercises, EXERCISES_SCHEMA),
        "pruned": write(tmp_path / "pr", pruned),
    }
    results = validate(data, EXPECTATIONS, tmp_path / "no-filter-metrics.json")
    assert [(r.name, r.success) for r in results] == [("textbook", True), ("exercises", True), ("pruned", True)]

    bad = {"textbook": write(tmp_path / "tb2", bad_textbook, TEXTBOOK_SCHEMA), "pruned": write(tmp_path / "pr2", bad_pruned)}
    results = {r.name: r for r in validate(bad, EXPECTATIONS, tmp_path / "no-filter-metrics.json")}
    assert not results["pruned"].success and not results["textbook"].success
    assert [f.expectation for f in results["pruned"].failures] == ["expect_column_max_to_be_between"]
    assert [(f.expectation, f.column) for f in results["textbook"].failures] == [
        ("expect_column_values_to_match_regex", "text")]
