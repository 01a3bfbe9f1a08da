"""filter.refine, the quality filter's second pass, on the filter stage's fixtures: the
`embed` stage's vectors from one tiny real encoder (the cheap first pass) and a second,
different tiny real encoder (BERT) for the files in the band; real forests, real MLflow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from phi1.config import ConfigError, FilterConfig, RefineConfig, load_stage_config
from phi1.engines.embed import load_embedder
from phi1.filter.refine import FileCache, band, cascade, embed_cached
from phi1.filter.stage import load_quality_model, positive_proba, run
from phi1.io import read_table
from tests.engines.test_embed import build_tiny_encoder
from tests.filter.test_stage import cfg_for, data, inputs, outputs, tiny_dir  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), kind="bert")


def refine_cfg(bert_dir: Path, cache: Path | None, margin: float = 0.3) -> FilterConfig:
    return cfg_for(threshold=0.5, refine=RefineConfig(
        embedding=f"hf:{bert_dir}", margin=margin, max_tokens=64, cache_path=str(cache) if cache else None))


def test_band_is_half_open_around_the_threshold():
    s = np.array([0.0, 0.39, 0.4, 0.5, 0.59, 0.6, 1.0])
    assert band(s, 0.5, 0.1).tolist() == [False, False, True, True, True, False, False]
    assert cascade(s, band(s, 0.5, 0.1), np.array([0.7, 0.8, 0.9])).tolist() == [0.0, 0.39, 0.7, 0.8, 0.9, 0.6, 1.0]


@pytest.mark.parametrize("over, message", [
    (["filter.refine.embedding=minilm", "filter.threshold=null", "filter.top_fraction=0.3"],
     "filter.refine needs filter.threshold"),
    (["filter.refine.embedding=bogus"], "filter.refine.embedding must be"),
    (["filter.refine.embedding=minilm", "filter.refine.margin=0"], "filter.refine.margin must be in (0, 1]"),
    (["filter.refine.embedding=minilm", "filter.refine.batch_size=0"], "filter.refine.max_tokens and"),
])
def test_bad_refine_keys_name_the_key(over, message):
    repo = Path(__file__).resolve().parents[2]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_stage_config("filter", repo / "params.yaml", over)


def test_file_cache_holds_single_file_vectors_only(tmp_path, bert_dir):
    emb = load_embedder(f"hf:{bert_dir}", 64, 1, device="cpu")
    texts = ["def f(x):\n    return x + 1\n", "import os\nprint(os.sep)\n", "x = [i * i for i in range(9)]\n"]
    hashes = [f"h{i}" for i in range(3)]
    cache = FileCache(str(tmp_path / "c"), emb, RefineConfig(embedding="x", batch_size=1))
    X, cached = embed_cached(emb, cache, texts, hashes, progress=False)
    assert cached == 0 and len(list((tmp_path / "c").rglob("*.npy"))) == 3
    # a file's vector is the same alone as next to others (batch 1), so reading it back is exact
    Y, cached = embed_cached(emb, cache, texts[1:], hashes[1:], progress=False)
    assert cached == 2 and np.array_equal(Y, X[1:])
    np.testing.assert_array_equal(emb.embed(texts[2:], progress=False)[0], X[2])
    # with batches of several files a vector depends on its neighbours' padding: no cache
    assert FileCache(str(tmp_path / "d"), emb, RefineConfig(embedding="x", batch_size=8)).folder is None


@pytest.mark.slow  # two filter runs with MLflow, two encoders
def test_refine_rescores_the_band_and_the_saved_model_does_the_same(workdir, data, bert_dir):
    from mlflow import MlflowClient

    import mlflow

    cache = workdir / ".cache" / "refine"
    cfg = refine_cfg(bert_dir, cache)
    o = outputs(workdir)
    metrics = run(cfg, **inputs(data), **o)
    rows = data["rows"]
    texts = [r["content"] for r in rows]

    # The first pass alone (the same forest the stage fits on the embed stage's vectors).
    qm = load_quality_model(o["model_dir"])
    first = positive_proba(qm.classifier, qm.embedder.embed(texts, progress=False))
    refined = band(first, 0.5, 0.3)
    r = metrics["refine"]
    assert r["n_refined"] == int(refined.sum()) > 0
    annotated = {a["id"] for a in data["ann"]}
    assert r["n_embedded"] == len(annotated | {row["id"] for row, b in zip(rows, refined) if b})
    assert r["embedding"] == f"hf:{bert_dir}" and r["margin"] == 0.3 and r["cached"] == 0
    assert "roc_auc_first_pass" in metrics and 0 <= metrics["roc_auc"] <= 1
    on_disk = json.loads(o["metrics_path"].read_text())
    assert "cached" not in on_disk["refine"] and "embed_seconds" not in on_disk["refine"]  # run figures

    # Every file's score: the first pass outside the band, the second forest's inside; the
    # saved model scores new text the same way, and keeps the same files.
    scores = qm.score(texts)
    np.testing.assert_array_equal(scores[~refined], first[~refined])
    second, emb2 = qm.refine
    np.testing.assert_allclose(scores[refined], positive_proba(second, emb2.embed(
        [t for t, b in zip(texts, refined) if b], progress=False)), atol=1e-12)
    assert r["n_flipped"] == int(((first >= 0.5) != (scores >= 0.5)).sum())
    kept = read_table(o["out"]).to_pylist()
    assert {k["id"] for k in kept} == {row["id"] for row, s in zip(rows, scores) if s >= 0.5}
    by_id = {row["id"]: s for row, s in zip(rows, scores)}
    assert all(k["quality_score"] == pytest.approx(by_id[k["id"]], abs=1e-12) for k in kept)
    spec = json.loads((o["model_dir"] / "feature_spec.json").read_text())
    assert spec["refine"]["embedding"] == f"hf:{bert_dir}" and spec["refine"]["batch_size"] == 1
    assert (o["model_dir"] / spec["refine"]["classifier_file"]).is_file()

    # MLflow: both forests logged as models of the one filter run.
    client = MlflowClient()
    exp = client.get_experiment_by_name("phi1-test-data")
    (run_info,) = client.search_runs([exp.experiment_id], "tags.`phi1.stage` = 'filter'")
    assert run_info.data.params["refine_embedding"] == f"hf:{bert_dir}"
    assert run_info.data.metrics["refine.n_refined"] == r["n_refined"]
    names = {m.name for m in mlflow.search_logged_models([exp.experiment_id], output_format="list")}
    assert names == {"quality_classifier", "quality_refine_classifier"}

    # A rerun reads every second-pass vector from the cache and writes the same bytes.
    before = {p: p.read_bytes() for p in sorted(o["out"].glob("*.parquet"))}
    model_before = (o["model_dir"] / "refine_classifier.skops").read_bytes()
    again = run(cfg, **inputs(data), **o)
    assert again["refine"]["cached"] == r["n_embedded"]
    assert {p: p.read_bytes() for p in sorted(o["out"].glob("*.parquet"))} == before
    assert (o["model_dir"] / "refine_classifier.skops").read_bytes() == model_before
    # A wider band embeds only the files it adds.
    wider = run(replace(cfg, refine=replace(cfg.refine, margin=0.45)), **inputs(data), **o)
    assert wider["refine"]["cached"] == r["n_embedded"] < wider["refine"]["n_embedded"]
