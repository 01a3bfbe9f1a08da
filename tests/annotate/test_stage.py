import hashlib
import json
import sysconfig
from pathlib import Path

import mlflow
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from phi1.annotate.stage import (
    RUBRIC_WEIGHTS,
    SCHEMA,
    heuristic_rating,
    parse_rating,
    rubric,
    run,
    sample_ids,
)
from phi1.cli import app
from phi1.config import AnnotateConfig
from phi1.errors import Phi1Error
from phi1.io import atomic_dir, read_table, write_shards
from tests.openai_server import UNRATEABLE, OpenAIServer, expected_score, prompt_of

RUBRIC_COLS = [f"rubric_{p}" for p in RUBRIC_WEIGHTS]


def raw_row(source: str, path: str, content: str) -> dict:
    """A data/raw row (the ingest contract)."""
    return {
        "id": hashlib.sha1(f"{source}\0{path}".encode()).hexdigest()[:16],
        "source": source, "path": path, "content": content,
        "n_bytes": len(content.encode()), "n_chars": len(content), "n_lines": content.count("\n"),
        "hash": hashlib.sha256(" ".join(content.split()).encode()).hexdigest(),
    }


def write_raw(dest: Path, files: dict[str, str], shard_size: int = 7) -> Path:
    with atomic_dir(dest) as tmp:
        write_shards(tmp, [raw_row("stdlib", p, t) for p, t in sorted(files.items())], shard_size=shard_size)
    return dest


@pytest.fixture
def raw(small_corpus, tmp_path) -> Path:
    files = {p.relative_to(small_corpus).as_posix(): p.read_text() for p in small_corpus.rglob("*.py")}
    return write_raw(tmp_path / "raw", files)


def annotate(workdir, raw, cfg=None, name="ann"):
    cfg = cfg or AnnotateConfig()
    metrics = run(cfg, raw=raw, out=workdir / name, metrics_path=workdir / f"{name}.json")
    return metrics, read_table(workdir / name)


# --------------------------------------------------------------------------- heuristic rubric

DOCUMENTED = '''"""Small searching and sorting helpers, written to be read."""


def binary_search(items, target):
    """Return the index of `target` in the sorted list `items`, or -1 if absent."""
    low, high = 0, len(items) - 1
    while low <= high:
        middle = (low + high) // 2
        # Halve the search range each step: O(log n) comparisons.
        if items[middle] == target:
            return middle
        if items[middle] < target:
            low = middle + 1
        else:
            high = middle - 1
    return -1


def insertion_sort(values):
    """Return a sorted copy of `values`, inserting each element into place."""
    result = []
    for value in values:
        position = len(result)
        # Walk left past larger elements.
        while position > 0 and result[position - 1] > value:
            position -= 1
        result.insert(position, value)
    return result


def count_words(text):
    """Map each lower-cased word of `text` to how often it occurs."""
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
'''

DATA_TABLE = "CODES = {\n" + "".join(f"    {i}: 'code-{i:04d}', \n" for i in range(120)) + "}\n" + \
    "NAMES = [" + ", ".join(f"'n{i}'" for i in range(200)) + "]\n"

CRYPTIC = """import numpy as np
import pandas as pd
import torch as t
g = 0
def f(a, b):
    global g
    g = a
    x = a * b
    y = x + 1
    z = y * 2
    q = z - x
    w = q + y
    return w
def h(p):
    global g
    r = p
    g = r
    return r
""" + "".join(f"v{i} = f({i}, {i + 1})\n" for i in range(40))


def test_rubric_parts_and_score_are_in_range():
    for text in (DOCUMENTED, DATA_TABLE, CRYPTIC, "", "def broken(:\n    pass\n"):
        r = heuristic_rating(text)
        assert set(r.rubric) == set(RUBRIC_WEIGHTS)
        assert all(0.0 <= v <= 1.0 for v in r.rubric.values())
        assert 0.0 <= r.score <= 1.0
        assert r.score == pytest.approx(sum(RUBRIC_WEIGHTS[k] * v for k, v in r.rubric.items()), abs=1e-3)
        assert r.rationale.startswith("Heuristic educational value")
    assert sum(RUBRIC_WEIGHTS.values()) == pytest.approx(1.0)


def test_documented_code_beats_data_tables_and_cryptic_code():
    good, table, cryptic = (heuristic_rating(t) for t in (DOCUMENTED, DATA_TABLE, CRYPTIC))
    assert good.score >= 0.75 and good.score > table.score + 0.3 and good.score > cryptic.score + 0.3
    assert good.rubric["docstrings"] == 1.0 and good.rubric["logic"] == 1.0
    assert table.rubric["data"] == 0.0 and cryptic.rubric["docstrings"] == 0.0
    assert cryptic.rubric["names"] < 0.5 and cryptic.rubric["self_contained"] < 0.5
    assert cryptic.rubric["imports"] < 0.5  # numpy, pandas, torch are not the stdlib
    assert "strong on docstrings" in good.rationale
    assert "weak on" in cryptic.rationale and "docstrings" in cryptic.rationale.split("weak on")[1]


def test_stdlib_algorithm_modules_beat_tests_and_generated_tables():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    score = {n: heuristic_rating((stdlib / n).read_text()).score
             for n in ("bisect.py", "heapq.py", "graphlib.py", "test/test_bisect.py", "stringprep.py", "this.py")}
    algorithms = min(score["bisect.py"], score["heapq.py"], score["graphlib.py"])
    assert algorithms >= 0.8
    assert algorithms > score["test/test_bisect.py"] + 0.25
    assert algorithms > max(score["stringprep.py"], score["this.py"]) + 0.4


def test_unit_tests_get_less_logic_credit_than_the_code_they_test():
    code = "def add(a, b):\n    return a + b if a else b\n"
    tests = "def test_add(self):\n    self.assertEqual(add(1, 2), 3)\n    assert add(0, 2) == 2\n"
    assert rubric(code)["logic"] == 1.0 and rubric(tests)["logic"] == 0.0


def test_unparsable_file_scores_zero_on_tree_parts():
    r = rubric("def broken(:\n    return 1\n" * 5)
    assert r["docstrings"] == r["logic"] == r["self_contained"] == r["names"] == 0.0


# --------------------------------------------------------------------------- LLM answers


@pytest.mark.parametrize(
    "answer, score",
    [
        ('{"score": 7, "rationale": "Clear loops."}', 0.7),
        ('Sure!\n```json\n{"score": 3, "rationale": "Mostly data."}\n```', 0.3),
        ('```\n{"score": 10, "rationale": "x"}\n```', 1.0),
        ('My rating: {"score": 4.5, "rationale": "ok"} hope that helps', 0.45),
        ('{"score": "8", "rationale": "string score"}', 0.8),
        ('{"score": 0, "rationale": "none"}', 0.0),
        ('{"Score": 6, "Rationale": "capitalised keys"}', 0.6),
    ],
)
def test_parse_rating_accepts_json_bare_or_fenced(answer, score):
    r = parse_rating(answer)
    assert r is not None and r.score == pytest.approx(score) and r.rationale and r.rubric is None


@pytest.mark.parametrize(
    "answer",
    [None, "", "I'd give it a seven.", '{"score": 11, "rationale": "too high"}', '{"score": -1}',
     '{"score": true}', '{"rationale": "no score"}', '["score", 7]', '```json\n{"score": \n```'],
)
def test_parse_rating_rejects_what_is_not_a_rating(answer):
    assert parse_rating(answer) is None


def test_missing_rationale_gets_a_placeholder():
    assert parse_rating('{"score": 5}').rationale == "(the model gave no rationale)"


# --------------------------------------------------------------------------- the stage


def test_sample_is_seeded_and_sized():
    ids = [f"{i:04x}" for i in range(100)]
    a = sample_ids(ids, 10, seed=1)
    assert a == sample_ids(list(reversed(ids)), 10, seed=1)  # independent of input order
    assert len(a) == 10 and len(set(a)) == 10 and set(a) <= set(ids)
    assert a != sample_ids(ids, 10, seed=2)
    assert sample_ids(ids, 500, seed=1) == sorted(ids)


@pytest.mark.slow  # a fresh MLflow sqlite store takes seconds to create
def test_heuristic_stage_is_deterministic_and_follows_the_contract(workdir, raw):
    cfg = AnnotateConfig(sample_size=12, seed=7)
    m1, t1 = annotate(workdir, raw, cfg, "a1")
    m2, t2 = annotate(workdir, raw, cfg, "a2")
    assert t1.equals(t2) and m1 | {"seconds": 0} == m2 | {"seconds": 0}
    assert t1.schema.equals(SCHEMA)
    rows = t1.to_pylist()
    raw_ids = set(read_table(raw, columns=["id"]).column("id").to_pylist())
    assert len(rows) == 12 and len({r["id"] for r in rows}) == 12 and {r["id"] for r in rows} <= raw_ids
    for r in rows:
        assert 0 <= r["score"] <= 1 and r["label"] == int(r["score"] >= cfg.label_threshold)
        assert r["rationale"] and r["backend"] == "heuristic" and r["model"] == "heuristic-v1"
        assert all(0 <= r[c] <= 1 for c in RUBRIC_COLS)
    # Another seed, another sample; more than the corpus, all of it.
    m3, t3 = annotate(workdir, raw, AnnotateConfig(sample_size=1000), "a3")
    assert t3.num_rows == 20 == m3["n"] == m3["n_raw"]

    saved = json.loads((workdir / "a1.json").read_text())
    assert saved == {k: v for k, v in m1.items() if k != "seconds"}  # timings go to MLflow only
    assert m1["n"] == 12 and m1["backend"] == "heuristic" and m1["rejected_unparsable"] == 0
    assert m1["mean_score"] == pytest.approx(sum(t1.column("score").to_pylist()) / 12, abs=1e-4)
    assert m1["positive_fraction"] == pytest.approx(sum(t1.column("label").to_pylist()) / 12, abs=1e-4)
    assert set(m1["rubric_mean"]) == set(RUBRIC_WEIGHTS)

    # Each run is in MLflow with its metrics and the annotation table.
    runs = mlflow.search_runs(experiment_names=["phi1-test-data"], output_format="list", order_by=["start_time ASC"])
    assert len(runs) == 3
    first = runs[0]
    assert first.data.tags["phi1.stage"] == "annotate" and first.data.params["backend"] == "heuristic"
    assert first.data.metrics["mean_score"] == pytest.approx(m1["mean_score"])
    assert first.data.metrics["rubric_mean.docstrings"] == pytest.approx(m1["rubric_mean"]["docstrings"])
    local = mlflow.artifacts.download_artifacts(run_id=first.info.run_id, artifact_path="annotations.json")
    logged = json.loads(Path(local).read_text())
    assert len(logged["data"]) == 12 and "score" in logged["columns"] and "path" in logged["columns"]


def test_bad_input_is_a_one_line_error(tmp_path):
    workdir = tmp_path
    with pytest.raises(Phi1Error, match="nope is missing or has no parquet shards"):
        run(AnnotateConfig(), raw=tmp_path / "nope", out=workdir / "a", metrics_path=workdir / "m.json")
    bad = tmp_path / "bad"
    bad.mkdir()
    write_shards(bad, [{"id": "x", "text": "print(1)"}])
    with pytest.raises(Phi1Error, match=r"part-00000.parquet lacks column\(s\) content"):
        run(AnnotateConfig(), raw=bad, out=workdir / "a", metrics_path=workdir / "m.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    write_shards(empty, [], schema=pa.schema([("id", pa.string()), ("content", pa.string())]))
    with pytest.raises(Phi1Error, match="empty has no rows"):
        run(AnnotateConfig(), raw=empty, out=workdir / "a", metrics_path=workdir / "m.json")
    assert not (workdir / "a").exists() and not (workdir / "m.json").exists()


# --------------------------------------------------------------------------- openai backend


def openai_cfg(server_url: str, cache: Path, **kw) -> AnnotateConfig:
    return AnnotateConfig(backend="openai", base_url=server_url, model="rater-1", api_key_env="PHI1_TEST_KEY",
                          cache_path=str(cache), backoff=0.01, **kw)


@pytest.mark.slow  # a fresh MLflow sqlite store takes seconds to create
def test_openai_backend_rates_counts_rejects_and_caches(workdir, small_corpus, tmp_path, monkeypatch):
    files = {p.relative_to(small_corpus).as_posix(): p.read_text() for p in small_corpus.rglob("*.py")}
    files["odd.py"] = f"# {UNRATEABLE}\nprint('hello world')\n"
    raw = write_raw(tmp_path / "raw", files)
    monkeypatch.setenv("PHI1_TEST_KEY", "sk-annotate")
    with OpenAIServer() as server:
        cfg = openai_cfg(server.base_url, tmp_path / "cache", sample_size=100, concurrency=4, max_chars=300)
        metrics, table = annotate(workdir, raw, cfg)
        sent = list(server.requests)
    assert len(sent) == 21 and metrics["requests_sent"] == 21 and metrics["cache_hits"] == 0
    assert metrics["rejected_unparsable"] == 1 and metrics["n"] == 20 == table.num_rows
    assert all(r["headers"].get("Authorization") == "Bearer sk-annotate" for r in sent)
    prompts = [prompt_of(r["body"]) for r in sent]  # in arrival order, which 4 workers make arbitrary
    assert all("educational value" in p and "basic coding concepts" in p for p in prompts)
    assert any("(truncated)" in p for p in prompts) and not any("(truncated)" in p for p in prompts if UNRATEABLE in p)
    expected = {}
    for r in sent:
        p = prompt_of(r["body"])
        if UNRATEABLE not in p:
            path = p.split("File: ", 1)[1].split("\n", 1)[0]
            expected[raw_row("stdlib", path, "")["id"]] = expected_score(p) / 10
    rows = table.to_pylist()
    assert {r["id"]: r["score"] for r in rows} == pytest.approx(expected)
    assert all(r["backend"] == "openai" and r["model"] == "rater-1" and r["rationale"] for r in rows)
    assert all(r[c] is None for r in rows for c in RUBRIC_COLS)
    run_ = mlflow.search_runs(experiment_names=["phi1-test-data"], output_format="list")[0]
    assert run_.data.metrics["rejected_unparsable"] == 1
    local = mlflow.artifacts.download_artifacts(run_id=run_.info.run_id, artifact_path="annotate/rejected.json")
    assert json.loads(Path(local).read_text())["rejected_unparsable"][0]["answer"] == "I would rather not say."

    # A rerun (the server is gone) costs nothing: every answer comes from the cache.
    again, table2 = annotate(workdir, raw, cfg, "ann2")
    assert again["requests_sent"] == 0 and again["cache_hits"] == 21
    assert table2.equals(table)


@pytest.mark.slow  # a fresh MLflow sqlite store takes seconds to create
def test_openai_failures_are_one_line_errors_and_write_nothing(workdir, raw, tmp_path):
    with OpenAIServer() as server:
        url = server.base_url  # closed once the block ends
    with pytest.raises(Phi1Error) as info:
        annotate(workdir, raw, openai_cfg(url, tmp_path / "cache", sample_size=3, max_retries=1))
    assert f"{url}/chat/completions" in str(info.value) and "\n" not in str(info.value)

    with OpenAIServer(answer=lambda body: "no idea") as server, \
            pytest.raises(Phi1Error, match="none of the 4 answers from .* parsed as a rating"):
        annotate(workdir, raw, openai_cfg(server.base_url, tmp_path / "cache", sample_size=4))
    assert not (workdir / "ann").exists() and not (workdir / "ann.json").exists()


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow  # a fresh MLflow sqlite store takes seconds to create
def test_cli_annotate_on_a_temp_params_file(workdir, raw):
    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({"annotate": {"sample_size": 6, "seed": 3}}))
    result = CliRunner().invoke(app, [
        "annotate", "--params", str(params), "-S", "annotate.label_threshold=0.6",
        "--raw", str(raw), "--out", "data/annotations", "--metrics", "metrics/annotate.json",
    ])
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "metrics/annotate.json").read_text())
    assert metrics["n"] == 6 and metrics["label_threshold"] == 0.6
    table = read_table(workdir / "data/annotations")
    assert table.num_rows == 6
    assert table.column("label").to_pylist() == [int(s >= 0.6) for s in table.column("score").to_pylist()]

    missing = CliRunner().invoke(app, ["annotate", "--params", str(params), "--raw", "nowhere"])
    assert missing.exit_code == 2 and "error: annotate: input dataset nowhere" in missing.output
