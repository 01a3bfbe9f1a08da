"""The validate gate: real GX suites from expectations/ over real parquet datasets built
from the small stdlib corpus; each corruption is caught by the expectation meant for it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import mlflow
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import ValidateConfig
from phi1.errors import Phi1Error
from phi1.io import atomic_dir, write_json, write_shards
from phi1.validate.stage import load_suite, run, validate
from tests.conftest import REPO

EXPECTATIONS = REPO / "expectations"

RAW_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("path", pa.string()), ("content", pa.string()),
    ("n_bytes", pa.int64()), ("n_chars", pa.int64()), ("n_lines", pa.int64()), ("hash", pa.string()),
])
FILTERED_SCHEMA = RAW_SCHEMA.append(pa.field("quality_score", pa.float64()))
ANNOTATIONS_SCHEMA = pa.schema([
    ("id", pa.string()), ("score", pa.float64()), ("label", pa.int64()), ("rationale", pa.string()),
    ("backend", pa.string()), ("model", pa.string()), ("rubric_docs", pa.float64()),
])

Mutator = Callable[[list[dict]], None]


def _raw_rows(corpus: Path) -> list[dict]:
    rows = []
    for f in sorted(corpus.rglob("*.py")):
        content = f.read_text(encoding="utf-8")
        path = f.relative_to(corpus).as_posix()
        rows.append({
            "id": hashlib.sha1(f"stdlib\0{path}".encode()).hexdigest()[:16],
            "source": "stdlib", "path": path, "content": content,
            "n_bytes": len(content.encode()), "n_chars": len(content), "n_lines": content.count("\n") + 1,
            "hash": hashlib.sha256(" ".join(content.split()).encode()).hexdigest(),
        })
    return rows


def build_datasets(root: Path, corpus: Path, corrupt: dict[str, Mutator] | None = None,
                   metrics: dict | None = None) -> dict[str, Path]:
    """data/raw, data/annotations, data/codetextbook/filtered and metrics/filter.json as
    the stages write them (the kept half scores higher than all files); `corrupt[name]`
    mutates that dataset's rows before writing."""
    corrupt = corrupt or {}
    raw = _raw_rows(corpus)
    scores = [round(0.05 + 0.9 * i / (len(raw) - 1), 4) for i in range(len(raw))]
    annotations = [
        {"id": r["id"], "score": s, "label": int(s >= 0.5), "rationale": f"rated {s}",
         "backend": "heuristic", "model": "heuristic-v1", "rubric_docs": s}
        for r, s in zip(raw, scores)
    ]
    kept = [{**r, "quality_score": s} for r, s in zip(raw, scores) if s >= 0.5]
    filter_metrics = {
        "mean_score_all": sum(scores) / len(scores),
        "mean_score_kept": sum(r["quality_score"] for r in kept) / len(kept),
        **(metrics or {}),
    }
    paths = {"raw": root / "data/raw", "annotations": root / "data/annotations",
             "filtered": root / "data/codetextbook/filtered"}
    for name, rows, schema in [("raw", raw, RAW_SCHEMA), ("annotations", annotations, ANNOTATIONS_SCHEMA),
                               ("filtered", kept, FILTERED_SCHEMA)]:
        rows = [dict(r) for r in rows]
        if name in corrupt:
            corrupt[name](rows)
            schema = pa.schema([f for f in schema if f.name in rows[0]])
        with atomic_dir(paths[name]) as tmp:
            write_shards(tmp, rows, shard_size=8, schema=schema)
    write_json(root / "metrics/filter.json", filter_metrics)
    return paths


def _failed(results) -> set[tuple[str, str, str | None]]:
    return {(f.dataset, f.expectation, f.column) for r in results for f in r.failures}


def test_good_datasets_pass_every_suite(tmp_path, small_corpus):
    paths = build_datasets(tmp_path, small_corpus)
    results = validate(paths, EXPECTATIONS, tmp_path / "metrics/filter.json")
    assert [r.name for r in results] == ["raw", "annotations", "filtered"]
    assert _failed(results) == set()
    assert all(r.success and r.evaluated >= 10 for r in results)


def _set(i: int, key: str, value) -> Mutator:
    def mutate(rows):
        rows[i][key] = value
    return mutate


def _copy_from(src: int, dst: int, key: str) -> Mutator:
    def mutate(rows):
        rows[dst][key] = rows[src][key]
    return mutate


def _unparsable(rows):
    text = "def broken(:\n    return\n" * 20
    rows[0].update(content=text, n_bytes=len(text), n_chars=len(text), n_lines=text.count("\n") + 1)


@pytest.mark.parametrize(
    "dataset, corrupt, metrics, expected",
    [
        ("raw", _copy_from(0, 1, "id"), None, {("raw", "expect_column_values_to_be_unique", "id")}),
        ("annotations", _set(3, "id", None), None,
         {("annotations", "expect_column_values_to_not_be_null", "id")}),
        ("raw", _copy_from(0, 1, "hash"), None, {("raw", "expect_column_values_to_be_unique", "hash")}),
        ("raw", _unparsable, None, {("raw", "expect_column_values_to_be_in_set", "parses")}),
        ("filtered", _unparsable, None, {("filtered", "expect_column_values_to_be_in_set", "parses")}),
        ("annotations", _set(2, "score", 1.5), None,
         {("annotations", "expect_column_values_to_be_between", "score")}),
        ("filtered", _set(0, "quality_score", -0.1), None,
         {("filtered", "expect_column_values_to_be_between", "quality_score")}),
        ("annotations", _set(5, "label", 2), None,
         {("annotations", "expect_column_values_to_be_in_set", "label")}),
        ("filtered", None, {"mean_score_all": 0.99}, {("filtered", "expect_column_mean_to_be_between", "quality_score")}),
        ("raw", _set(4, "n_bytes", 5_000_000), None, {("raw", "expect_column_values_to_be_between", "n_bytes")}),
    ],
    ids=["duplicate-id", "null-id", "duplicate-hash", "unparsable-raw", "unparsable-filtered",
         "score-out-of-range", "quality-score-out-of-range", "label-not-binary", "kept-mean-below-raw",
         "oversized"],
)
def test_each_corruption_fails_its_expectation(tmp_path, small_corpus, dataset, corrupt, metrics, expected):
    paths = build_datasets(tmp_path, small_corpus, {dataset: corrupt} if corrupt else None, metrics)
    (result,) = validate({dataset: paths[dataset]}, EXPECTATIONS, tmp_path / "metrics/filter.json")
    assert not result.success
    assert _failed([result]) == expected
    assert all(f.observed and f.observed != "-" for f in result.failures)


def test_missing_column_fails_the_schema_expectation(tmp_path, small_corpus):
    def drop_hash(rows):
        for r in rows:
            del r["hash"]

    paths = build_datasets(tmp_path, small_corpus, {"raw": drop_hash})
    (result,) = validate({"raw": paths["raw"]}, EXPECTATIONS, tmp_path / "metrics/filter.json")
    failed = {f.expectation: f for f in result.failures}
    assert "missing: [\"hash\"]" in failed["expect_table_columns_to_match_set"].observed
    assert ("raw", "expect_column_values_to_be_unique", "hash") in _failed([result])


def test_warning_severity_reports_without_failing_the_gate(tmp_path, small_corpus):
    suites = tmp_path / "suites"
    suites.mkdir()
    suite = json.loads((EXPECTATIONS / "annotations.json").read_text())
    for exp in suite["expectations"]:
        if exp["type"] == "expect_column_values_to_be_in_set" and exp["kwargs"]["column"] == "label":
            exp["severity"] = "warning"
    (suites / "annotations.json").write_text(json.dumps(suite))
    paths = build_datasets(tmp_path, small_corpus, {"annotations": _set(0, "label", 7)})
    (result,) = validate({"annotations": paths["annotations"]}, suites, tmp_path / "metrics/filter.json")
    assert result.success
    assert [(f.expectation, f.severity) for f in result.failures] == [("expect_column_values_to_be_in_set", "warning")]


def test_bad_inputs_are_one_line_errors_naming_them(tmp_path, small_corpus):
    paths = build_datasets(tmp_path, small_corpus)
    metrics = tmp_path / "metrics/filter.json"
    with pytest.raises(Phi1Error, match="dataset 'raw' not found: .*nowhere"):
        validate({"raw": tmp_path / "nowhere"}, EXPECTATIONS, metrics)
    with pytest.raises(Phi1Error, match=r"no suite for dataset 'nosuch': .*nosuch\.json not found"):
        validate({"nosuch": paths["raw"]}, EXPECTATIONS, metrics)
    with pytest.raises(Phi1Error, match=r"filtered\.json uses suite parameter 'raw_mean_score', read from .*absent\.json"):
        validate({"filtered": paths["filtered"]}, EXPECTATIONS, tmp_path / "absent.json")

    suites = tmp_path / "suites"
    suites.mkdir()
    suite = json.loads((EXPECTATIONS / "raw.json").read_text())
    suite["expectations"][2]["type"] = "expect_column_values_to_be_uniqe"
    (suites / "raw.json").write_text(json.dumps(suite))
    with pytest.raises(Phi1Error, match=r"raw\.json: expectations\[2\] \(expect_column_values_to_be_uniqe\): .*not found"):
        validate({"raw": paths["raw"]}, suites, metrics)
    suite = json.loads((EXPECTATIONS / "filtered.json").read_text())
    suite["expectations"][-1]["kwargs"]["min_value"] = {"$PARAMETER": "nosuch"}
    (suites / "filtered.json").write_text(json.dumps(suite))
    with pytest.raises(Phi1Error, match=r"filtered\.json: unknown suite parameter 'nosuch' \(known: raw_mean_score\)"):
        validate({"filtered": paths["filtered"]}, suites, metrics)
    (suites / "annotations.json").write_text("{not json")
    with pytest.raises(Phi1Error, match=r"annotations\.json: not valid JSON \(line 1"):
        validate({"annotations": paths["annotations"]}, suites, metrics)


def test_committed_suites_round_trip_through_gx():
    """The files are what ExpectationSuite serialises to: loading and re-serialising keeps every expectation."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    for path in sorted(EXPECTATIONS.glob("*.json")):
        data = json.loads(path.read_text())
        suite = load_suite(path)
        assert suite.name == path.stem
        again = suite.to_json_dict()
        assert [e["type"] for e in again["expectations"]] == [e["type"] for e in data["expectations"]]
        # equal as GX expectations (the files may spell out a default, e.g. exact_match: true)
        built = [ExpectationConfiguration(**e).to_domain_obj() for e in again["expectations"]]
        assert built == [ExpectationConfiguration(**e).to_domain_obj() for e in data["expectations"]]


@pytest.mark.slow
def test_run_writes_report_and_logs_to_mlflow_also_on_failure(workdir, small_corpus):
    paths = build_datasets(workdir, small_corpus)
    out = workdir / "reports/validation"
    ok = run(ValidateConfig(), paths, EXPECTATIONS, out, workdir / "metrics/filter.json")
    assert ok
    summary = json.loads((out / "summary.json").read_text())
    assert {n: s["success"] for n, s in summary.items()} == {"raw": True, "annotations": True, "filtered": True}
    assert json.loads((out / "raw.json").read_text())["statistics"]["unsuccessful_expectations"] == 0
    index = (out / "data_docs/index.html").read_text()
    assert "filtered" in index and str(workdir) not in index  # relative links: the folder can move
    assert len(list((out / "data_docs/validations").rglob("*.html"))) == 3

    (run_,) = mlflow.search_runs(experiment_names=["phi1-test-data"], output_format="list")
    assert run_.data.metrics["filtered.success"] == 1.0
    assert run_.data.tags["validate.success"] == "true"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_.info.run_id, "validation")}
    assert "validation/summary.json" in arts

    build_datasets(workdir, small_corpus, {"annotations": _set(0, "label", 3)})
    ok = run(ValidateConfig(data_docs=False), paths, EXPECTATIONS, out, workdir / "metrics/filter.json")
    assert not ok
    summary = json.loads((out / "summary.json").read_text())
    assert summary["annotations"]["success"] is False
    assert [f["expectation"] for f in summary["annotations"]["failed"]] == ["expect_column_values_to_be_in_set"]
    assert not (out / "data_docs").exists()  # the whole folder was replaced
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_cli_exits_1_and_prints_the_failing_expectation(workdir, small_corpus, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    paths = build_datasets(workdir, small_corpus, {"annotations": _set(0, "label", 2)})
    result = CliRunner().invoke(app, [
        "validate", f"annotations={paths['annotations']}", "--params", str(REPO / "params.yaml"),
        "--expectations", str(EXPECTATIONS), "--out", "reports/validation",
    ])
    assert result.exit_code == 1, result.output
    assert "FAIL annotations" in result.output
    line = next(ln for ln in result.output.splitlines() if "expect_column_values_to_be_in_set" in ln)
    assert "label" in line and "1 of 20 unexpected" in line
    assert (workdir / "reports/validation/summary.json").is_file()
    assert (workdir / "reports/validation/data_docs/index.html").is_file()  # relative --out works

    missing = CliRunner().invoke(app, [
        "validate", "raw=data/nope", "--params", str(REPO / "params.yaml"), "--expectations", str(EXPECTATIONS),
    ])
    assert missing.exit_code == 2
    assert "error: dataset 'raw' not found: data/nope" in missing.output


DVC_YAML = """\
stages:
  validate:
    cmd: phi1 validate annotations=data/annotations --expectations expectations --out reports/validation
    deps:
      - data/annotations
      - expectations
    outs:
      - reports/validation
  train:
    cmd: python -c "open('trained.marker', 'w').write('trained')"
    deps:
      - reports/validation
    outs:
      - trained.marker
"""


@pytest.mark.slow
def test_failing_suite_stops_dvc_repro_before_training(workdir, small_corpus):
    """In a real git+DVC repo a corrupted dataset makes `dvc repro` fail at validate, so
    the downstream stage never runs; fixing the data lets it through."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    dvc = str(bin_dir / "dvc")

    def sh(*cmd, check=True):
        return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=check)

    sh("git", "init", "-q")
    sh(dvc, "init", "-q")
    shutil.copytree(EXPECTATIONS, workdir / "expectations")
    (workdir / "params.yaml").write_text("validate:\n  datasets: [annotations]\n")
    (workdir / "dvc.yaml").write_text(DVC_YAML)

    build_datasets(workdir, small_corpus, {"annotations": _set(0, "score", 7.0)})
    bad = sh(dvc, "repro", check=False)
    assert bad.returncode != 0
    assert "expect_column_values_to_be_between" in bad.stderr + bad.stdout
    assert not (workdir / "trained.marker").exists()
    summary = json.loads((workdir / "reports/validation/summary.json").read_text())
    assert summary["annotations"]["success"] is False

    build_datasets(workdir, small_corpus)
    good = sh(dvc, "repro", check=False)
    assert good.returncode == 0, good.stderr + good.stdout
    assert (workdir / "trained.marker").read_text() == "trained"


def test_report_folder_is_the_same_bytes_on_every_run(tmp_path, small_corpus, monkeypatch):
    """Same data and suites, same report folder: GX's run time, load time, random ids and
    timestamped logo URL are fixed (tokenize, which depends on the folder, is not rerun).
    Its offline index.html lists each suite with counts, links and failing expectations."""
    from phi1.validate.stage import write_report

    monkeypatch.chdir(tmp_path)
    build_datasets(tmp_path, small_corpus)
    paths = {"raw": Path("data/raw"), "annotations": Path("data/annotations")}

    def report(out: str, paths=paths) -> dict[str, bytes]:
        results = validate(paths, EXPECTATIONS, Path("metrics/filter.json"), docs_dir=Path(out) / "data_docs")
        write_report(results, Path(out))
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(Path(out).rglob("*")) if p.is_file()}

    first, second = report("one"), report("two")
    assert first.keys() == second.keys() and len([k for k in first if k.endswith(".html")]) >= 5
    assert [k for k in first if first[k] != second[k]] == []
    assert not any(b"logo-long.png?d=" in v or b"ge_load_time\": \"2" in v for v in first.values())

    index = first["index.html"].decode()
    assert "All 2 suites passed." in index and "<script" not in index and "https://" not in index
    links = re.findall(r'href="([^"]+)"', index)
    assert len(links) == 4 and all((tmp_path / "one" / link).is_file() for link in links)

    build_datasets(tmp_path, small_corpus, {"annotations": _set(0, "label", 3)})
    index = report("three")["index.html"].decode()
    assert "1 of 2 suites FAILED" in index and '<tr class="fail"><td>annotations</td><td>FAILED</td>' in index
    assert "<td>annotations</td><td>expect_column_values_to_be_in_set</td><td>label</td>" in index


def test_batches_give_the_result_of_one_whole_table_run(tmp_path, small_corpus):
    """Failures spread over several batches (shards of 8 rows, batches of 3): the counts,
    the first unexpected values and their row numbers, the verdicts and the order of
    results are those of a run that sees the whole table at once."""
    def corrupt(rows):
        for i in (1, 9, 17):  # a bad score in three batches and shards
            rows[i]["score"] = 1.5 + i
        rows[12]["id"] = rows[4]["id"]  # a duplicate across batches (and shards)
        rows[13]["label"] = None

    paths = build_datasets(tmp_path, small_corpus, {"annotations": corrupt})
    metrics = tmp_path / "metrics/filter.json"
    datasets = {"annotations": paths["annotations"], "raw": paths["raw"]}
    batched = validate(datasets, EXPECTATIONS, metrics, batch_rows=3)
    whole = validate(datasets, EXPECTATIONS, metrics, batch_rows=10_000)
    for b, w in zip(batched, whole):
        assert b.result["results"] == w.result["results"] and b.result["statistics"] == w.result["statistics"]
        # all but the batch fingerprint, hashed batch by batch (an int column with a null in
        # one batch is float64 there alone, so the hashes differ from the whole frame's)
        drop = {"batch_markers"}
        assert {k: v for k, v in b.result["meta"].items() if k not in drop} == \
            {k: v for k, v in w.result["meta"].items() if k not in drop}
    by_type = {(r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column")): r["result"]
               for r in batched[0].result["results"]}
    score = by_type[("expect_column_values_to_be_between", "score")]
    assert score["unexpected_count"] == 3 and score["partial_unexpected_index_list"] == [1, 9, 17]
    assert by_type[("expect_column_values_to_be_unique", "id")]["unexpected_count"] == 2
    assert by_type[("expect_column_values_to_not_be_null", "label")]["unexpected_count"] == 1
    assert by_type[("expect_table_row_count_to_be_between", None)]["observed_value"] == 20
    assert not batched[0].success and batched[1].success


def test_batches_must_hold_a_row(tmp_path, small_corpus):
    paths = build_datasets(tmp_path, small_corpus)
    with pytest.raises(Phi1Error, match="batch_rows must be >= 1"):
        validate({"raw": paths["raw"]}, EXPECTATIONS, tmp_path / "metrics/filter.json", batch_rows=0)
