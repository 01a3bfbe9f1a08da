"""The filter stage end to end on real parquet fixtures, vectors from the real `embed`
stage (a tiny real HF encoder), a real random forest and the workdir's real sqlite
MLflow store."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from phi1.tracking import split_run_figures
from phi1.config import EmbedConfig, FilterConfig
from phi1.embed.stage import run as embed_run
from phi1.errors import Phi1Error
from phi1.filter.stage import load_quality_model, run
from phi1.io import atomic_dir, read_table, write_shards
from tests.engines.test_embed import build_tiny_encoder

SCHEMA_KEYS = {
    "precision", "recall", "f1", "roc_auc", "n_train", "n_test", "n_scored", "n_kept", "kept_fraction",
    "mean_score_all", "mean_score_kept", "mean_score_dropped",
}
RAW_COLUMNS = ["id", "source", "path", "content", "n_bytes", "n_chars", "n_lines", "hash"]


def raw_row(source: str, path: str, content: str) -> dict:
    """One data/raw row as ingest writes it (the dataset contract)."""
    norm = "\n".join(line.rstrip() for line in content.strip().splitlines())
    return {
        "id": hashlib.sha1(f"{source}\0{path}".encode()).hexdigest()[:16],
        "source": source,
        "path": path,
        "content": content,
        "n_bytes": len(content.encode()),
        "n_chars": len(content),
        "n_lines": content.count("\n") + 1,
        "hash": hashlib.sha256(norm.encode()).hexdigest(),
    }


def educational(rng: random.Random, i: int) -> str:
    noun = rng.choice(["sum", "average", "maximum", "count", "product"])
    lines = [
        f"def compute_{noun}_{i}(values):",
        f'    """Return the {noun} of a list of numbers.',
        "",
        "    This example shows how a loop builds up a result one step at a time.",
        '    """',
        "    # Start with an empty result and update it for each value.",
        "    result = 0",
        "    for value in values:",
        "        # Explain each step so a student can follow along.",
        f"        result = result + value * {rng.randint(1, 9)}",
        "    return result",
        "",
        "",
        "if __name__ == '__main__':",
        f"    print(compute_{noun}_{i}([1, 2, 3]))",
    ]
    return "\n".join(lines) + "\n"


def data_blob(rng: random.Random, i: int) -> str:
    rows = [f"    0x{rng.getrandbits(32):08X}: (0x{rng.getrandbits(16):04x}, {rng.random():.6f}, 0o{rng.randint(0, 511):o})," for _ in range(12)]
    return f"_TABLE_{i} = {{\n" + "\n".join(rows) + f"\n}}\n_IDX_{i} = [_TABLE_{i}[k] for k in sorted(_TABLE_{i})]\n"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-phi"))


@pytest.fixture
def data(workdir, small_corpus, tiny_dir):
    """data/raw: 20 educational + 20 data-blob generated files + the 20 real stdlib files;
    data/annotations: the 40 generated files, label 1 for educational ones;
    data/embeddings: their vectors, from the `embed` stage with the tiny encoder."""
    tmp_path = workdir
    rng = random.Random(0)
    gen = [raw_row("gen", f"edu/{i}.py", educational(rng, i)) for i in range(20)]
    gen += [raw_row("gen", f"blob/{i}.py", data_blob(rng, i)) for i in range(20)]
    rng.shuffle(gen)
    real = [raw_row("stdlib", str(p.relative_to(small_corpus)), p.read_text()) for p in sorted(small_corpus.rglob("*.py"))]
    raw = tmp_path / "data" / "raw"
    with atomic_dir(raw) as d:
        write_shards(d, gen + real, shard_size=25)  # three shards: streaming across shard edges
    ann_rows = []
    for r in gen:
        label = int(r["path"].startswith("edu/"))
        ann_rows.append({
            "id": r["id"], "score": 0.55 + 0.4 * rng.random() if label else 0.45 * rng.random(),
            "label": label, "rationale": "fixture", "backend": "heuristic", "model": "heuristic-v1",
        })
    annotations = tmp_path / "data" / "annotations"
    write_ann(annotations, ann_rows)
    embeddings = embed(tmp_path, raw, EmbedConfig(embedding=f"hf:{tiny_dir}", max_tokens=64, cache_path=None))
    return {"raw": raw, "annotations": annotations, "embeddings": embeddings, "rows": gen + real, "ann": ann_rows}


def embed(root: Path, raw: Path, cfg: EmbedConfig, name: str = "embeddings") -> Path:
    out = root / "data" / name
    embed_run(cfg, raw=raw, out=out, metrics_path=root / "metrics" / f"{name}.json", progress=False)
    return out


def write_ann(path: Path, rows: list[dict]) -> Path:
    with atomic_dir(path) as d:
        write_shards(d, rows)
    return path


def outputs(root: Path) -> dict:
    return dict(
        out=root / "data" / "codetextbook" / "filtered", model_dir=root / "models" / "quality",
        metrics_path=root / "metrics" / "filter.json", plots_dir=root / "plots" / "filter",
    )


def cfg_for(**kw) -> FilterConfig:
    return FilterConfig(**{"n_estimators": 40, **kw})


def inputs(data: dict) -> dict:
    return dict(raw=data["raw"], annotations=data["annotations"], embeddings=data["embeddings"])


@pytest.mark.slow  # first MLflow store + imports: ~12 s on the shared 2-core box
def test_end_to_end_threshold(workdir, data, tiny_dir):
    import mlflow
    from mlflow import MlflowClient

    cfg = cfg_for(threshold=0.5)
    o = outputs(workdir)
    metrics = run(cfg, **inputs(data), **o)

    # Metrics: the contract's keys, in range, and on disk as returned.
    assert SCHEMA_KEYS | {"threshold"} <= set(metrics) and "top_fraction" not in metrics
    assert json.loads(o["metrics_path"].read_text()) == json.loads(json.dumps(split_run_figures(metrics)[0]))
    for k in ("precision", "recall", "f1", "roc_auc", "kept_fraction", "mean_score_all", "mean_score_kept"):
        assert 0.0 <= metrics[k] <= 1.0, k
    assert metrics["n_train"] + metrics["n_test"] == 40 and metrics["n_test"] == 10
    assert metrics["refit"] == "all_annotations" and metrics["n_fit"] == 40
    assert metrics["n_scored"] == 60 and "embed_files_per_s" not in metrics  # embedding is `embed`'s
    assert (metrics["embedding"], metrics["embedding_dim"]) == (f"hf:{tiny_dir}", 32)
    # The generated classes are easy to tell apart, even through a random tiny encoder.
    assert metrics["roc_auc"] >= 0.8

    # Filtered dataset: raw columns + quality_score, exactly the files at or above the threshold.
    table = read_table(o["out"])
    assert table.column_names == RAW_COLUMNS + ["quality_score"]
    assert table.schema.field("quality_score").type == "double"
    kept = table.to_pylist()
    assert len(kept) == metrics["n_kept"] > 0
    assert all(r["quality_score"] >= 0.5 for r in kept)
    by_id = {r["id"]: r for r in data["rows"]}
    for r in kept:
        assert {k: r[k] for k in RAW_COLUMNS} == by_id[r["id"]]
    assert metrics["mean_score_kept"] > metrics["mean_score_all"] > metrics["mean_score_dropped"]
    gen_kept = [r for r in kept if r["source"] == "gen"]
    assert sum(r["path"].startswith("edu/") for r in gen_kept) >= 0.8 * len(gen_kept)

    # models/quality: the spec says how to rebuild the features; the saved model reproduces the scores.
    spec = json.loads((o["model_dir"] / "feature_spec.json").read_text())
    import sklearn

    assert spec["embedding"] == f"hf:{tiny_dir}" and spec["dim"] == 32 and spec["max_tokens"] == 64
    # the features' spec is the embed stage's, so new text is embedded as the training data was
    emb_spec = json.loads((data["embeddings"] / "spec.json").read_text())
    assert {k: spec[k] for k in emb_spec} == emb_spec
    assert spec["sklearn_version"] == sklearn.__version__
    assert spec["keep"] == {"rule": "threshold", "threshold": 0.5, "score_cutoff": 0.5}
    qm = load_quality_model(o["model_dir"])
    all_scores = qm.score([r["content"] for r in data["rows"]])
    expected = {r["id"] for r, s in zip(data["rows"], all_scores) if s >= 0.5}
    assert {r["id"] for r in kept} == expected
    np.testing.assert_allclose(
        [r["quality_score"] for r in kept], qm.score([r["content"] for r in kept]), atol=1e-9
    )

    # Plots: a real PNG, and a CSV histogram that counts every scored file once.
    png = o["plots_dir"] / "scores_hist.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (o["plots_dir"] / "scores_hist.csv").read_text().splitlines()[1:]
    counts = np.array([[int(x) for x in line.split(",")[2:]] for line in rows])
    assert counts[:, 0].sum() == metrics["n_kept"] and counts.sum() == 60

    # MLflow: one filter run with metrics, params, artifacts, and a loadable logged model.
    client = MlflowClient()
    exp = client.get_experiment_by_name("phi1-test-data")
    (r,) = client.search_runs([exp.experiment_id], "tags.`phi1.stage` = 'filter'")
    assert r.data.metrics["n_kept"] == metrics["n_kept"]
    assert r.data.metrics["roc_auc"] == pytest.approx(metrics["roc_auc"])
    assert r.data.params["embedding"] == f"hf:{tiny_dir}"
    assert r.data.tags[f"data.{data['annotations']}"].startswith("computed:")
    assert r.data.tags[f"data.{data['embeddings']}"].startswith("computed:")
    arts = {a.path for d in ("plots", "quality_model", "metrics") for a in client.list_artifacts(r.info.run_id, d)}
    assert {"plots/scores_hist.png", "quality_model/feature_spec.json", "metrics/filter.json"} <= arts
    (lm,) = mlflow.search_logged_models([exp.experiment_id], output_format="list")
    assert lm.source_run_id == r.info.run_id
    loaded = mlflow.sklearn.load_model(lm.model_uri)
    X = qm.embedder.embed([r["content"] for r in kept])
    np.testing.assert_allclose(loaded.predict_proba(X)[:, 1], [r["quality_score"] for r in kept], atol=1e-9)


def _all_scores(model_dir: Path, rows: list[dict]) -> np.ndarray:
    return load_quality_model(model_dir).score([r["content"] for r in rows])


def test_top_fraction_keeps_exactly_the_best(workdir, data):
    o = outputs(workdir)
    metrics = run(cfg_for(threshold=None, top_fraction=0.25), **inputs(data), **o)
    assert "top_fraction" in metrics and "threshold" not in metrics
    assert metrics["n_kept"] == 15 and metrics["kept_fraction"] == 0.25
    kept = read_table(o["out"]).to_pylist()
    scores = _all_scores(o["model_dir"], data["rows"])
    kept_ids = {r["id"] for r in kept}
    kept_s = [s for r, s in zip(data["rows"], scores) if r["id"] in kept_ids]
    dropped_s = [s for r, s in zip(data["rows"], scores) if r["id"] not in kept_ids]
    assert min(kept_s) >= max(dropped_s)
    spec = json.loads((o["model_dir"] / "feature_spec.json").read_text())
    assert spec["keep"]["rule"] == "top_fraction" and spec["keep"]["score_cutoff"] == pytest.approx(min(kept_s))
    assert metrics["mean_score_kept"] > metrics["mean_score_all"]


def test_threshold_zero_keeps_all_and_higher_threshold_keeps_a_subset(workdir, data):
    o = outputs(workdir)
    m0 = run(cfg_for(threshold=0.0), **inputs(data), **o)
    assert m0["n_kept"] == 60 and m0["mean_score_dropped"] is None
    all_ids = {r["id"] for r in read_table(o["out"]).to_pylist()}
    m7 = run(cfg_for(threshold=0.7), **inputs(data), **o)
    ids7 = {r["id"] for r in read_table(o["out"]).to_pylist()}
    assert ids7 < all_ids and m7["n_kept"] == len(ids7) < m0["n_kept"]
    # Same seed, same data: the held-out evaluation does not depend on the keep rule.
    assert m7["roc_auc"] == m0["roc_auc"] and m7["f1"] == m0["f1"]


def _assert_no_outputs(root: Path) -> None:
    o = outputs(root)
    assert not any(p.exists() for p in o.values())


def test_annotation_ids_missing_from_raw(workdir, data):
    rows = [dict(r) for r in data["ann"]]
    rows[3]["id"], rows[7]["id"] = "feedfacefeedface", "0123456789abcdef"
    ann = write_ann(workdir / "ann_bad", rows)
    with pytest.raises(Phi1Error, match=r"2 of 40 annotation ids are not in .*raw \(e.g. feedfacefeedface\)"):
        run(cfg_for(), **{**inputs(data), "annotations": ann}, **outputs(workdir))
    _assert_no_outputs(workdir)


def test_single_class_suggests_label_threshold(workdir, data):
    rows = [{**r, "label": 0} for r in data["ann"]]
    ann = write_ann(workdir / "ann_one", rows)
    with pytest.raises(Phi1Error, match=r"all 40 rated files have label 0.*annotate.label_threshold; scores range"):
        run(cfg_for(), **{**inputs(data), "annotations": ann}, **outputs(workdir))
    _assert_no_outputs(workdir)


def test_too_few_annotations(workdir, data):
    ann = write_ann(workdir / "ann_few", data["ann"][:6])
    with pytest.raises(Phi1Error, match=r"6 rated files, need at least 10"):
        run(cfg_for(), **{**inputs(data), "annotations": ann}, **outputs(workdir))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: [{**r, "label": 2} for r in rows], "label must be 0 or 1, found 2"),
        (lambda rows: rows + rows[:3], "3 duplicate ids"),
        (lambda rows: [{k: v for k, v in r.items() if k != "label"} for r in rows], "missing column 'label'"),
    ],
)
def test_malformed_annotations(workdir, data, mutate, message):
    ann = write_ann(workdir / "ann_bad", mutate([dict(r) for r in data["ann"]]))
    with pytest.raises(Phi1Error, match=message):
        run(cfg_for(), **{**inputs(data), "annotations": ann}, **outputs(workdir))


def test_missing_inputs(workdir, data):
    o = outputs(workdir)
    with pytest.raises(Phi1Error, match="annotations dataset not found: .*nope"):
        run(cfg_for(), **{**inputs(data), "annotations": workdir / "nope"}, **o)
    with pytest.raises(Phi1Error, match=r"embeddings dataset not found: .*nope \(run `phi1 embed`\)"):
        run(cfg_for(), **{**inputs(data), "embeddings": workdir / "nope"}, **o)
    _assert_no_outputs(workdir)


def test_embeddings_of_another_raw_are_refused(workdir, data):
    """Vectors must be of this data/raw: the same ids, texts and order (content_sha256)."""
    rows = [dict(r) for r in data["rows"]]
    rows[41]["content"] += "# edited\n"  # the same id, another text (the 2nd shard)
    raw2 = workdir / "data" / "raw2"
    with atomic_dir(raw2) as d:
        write_shards(d, rows, shard_size=25)
    o = outputs(workdir)
    with pytest.raises(Phi1Error, match=rf"embeddings .*embeddings: row 41: file {rows[41]['id']} has another "
                                        r"text in .*raw2; rerun `phi1 embed` on this data/raw"):
        run(cfg_for(), **{**inputs(data), "raw": raw2}, **o)
    with atomic_dir(raw2) as d:
        write_shards(d, rows[:-1], shard_size=25)
    with pytest.raises(Phi1Error, match=r"60 vectors for 59 files of .*raw2; rerun `phi1 embed`"):
        run(cfg_for(), **{**inputs(data), "raw": raw2}, **o)
    _assert_no_outputs(workdir)


def test_cli_filter_on_a_temp_params_file(workdir, data):
    from typer.testing import CliRunner

    from phi1.cli import app

    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({"filter": {"n_estimators": 30}}))
    o = outputs(workdir)
    args = [
        "filter", "-p", str(params), "-S", "filter.threshold=null", "-S", "filter.top_fraction=0.5",
        "--raw", str(data["raw"]), "--annotations", str(data["annotations"]),
        "--embeddings", str(data["embeddings"]), "--out", str(o["out"]),
        "--model-dir", str(o["model_dir"]), "--metrics", str(o["metrics_path"]), "--plots", str(o["plots_dir"]),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    metrics = json.loads(o["metrics_path"].read_text())
    assert metrics["n_kept"] == 30 and metrics["top_fraction"] == 0.5
    assert pq.read_metadata(sorted(o["out"].glob("*.parquet"))[0]).num_rows == 30

    bad = write_ann(workdir / "ann_one", [{**r, "label": 1} for r in data["ann"]])
    res = CliRunner().invoke(app, [*args[:7], "--raw", str(data["raw"]), "--annotations", str(bad),
                                   "--embeddings", str(data["embeddings"])])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: annotations ") and "annotate.label_threshold" in res.stderr


@pytest.mark.slow
def test_end_to_end_default_minilm(workdir, data):
    """The default embedding (packaged all-MiniLM-L6-v2) through embed and the whole stage."""
    o = outputs(workdir)
    minilm = embed(workdir, data["raw"], EmbedConfig(cache_path=None), "minilm")
    metrics = run(FilterConfig(n_estimators=50), **{**inputs(data), "embeddings": minilm}, **o)
    assert metrics["embedding"] == "minilm" and metrics["embedding_dim"] == 384
    assert metrics["roc_auc"] >= 0.8 and metrics["mean_score_kept"] > metrics["mean_score_all"]
    spec = json.loads((o["model_dir"] / "feature_spec.json").read_text())
    assert spec["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2" and spec["dim"] == 384
    assert read_table(o["out"]).num_rows == metrics["n_kept"] > 0


def test_the_saved_classifier_is_the_same_bytes_every_time(tmp_path):
    """skops names objects by id() and stamps zip times: the saved model must not carry
    them, so the same commit gives the same models/quality hash on any run."""
    import time

    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    from phi1.filter.stage import CLASSIFIER_FILE, SKOPS_TRUSTED, save_model

    rng = np.random.RandomState(0)
    X = rng.rand(120, 6)
    clf = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, (X[:, 0] > 0.5).astype(int))
    saved = []
    for i in range(2):
        (tmp_path / str(i)).mkdir()
        save_model(tmp_path / str(i), clf, {"k": 1})
        saved.append((tmp_path / str(i) / CLASSIFIER_FILE).read_bytes())
        time.sleep(1.1)  # a new zip timestamp, were it kept
    assert saved[0] == saved[1]
    loaded = sio.loads(saved[0], trusted=SKOPS_TRUSTED)
    assert (loaded.predict_proba(X) == clf.predict_proba(X)).all()
