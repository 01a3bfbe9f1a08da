"""The embed stage on real parquet shards with a tiny real HF encoder and the workdir's
real sqlite MLflow store; and, in a real DVC repo, that a new filter threshold reruns
`filter` alone (DVC skips `embed`) and an old one comes back from DVC's run cache."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from phi1.config import EmbedConfig
from phi1.embed.stage import run
from phi1.engines.embed import load_embedder
from phi1.engines.vectors import content_sha256, read_vectors
from phi1.errors import Phi1Error
from phi1.io import atomic_dir, read_table, write_shards
from tests.dvc_repo import pipeline_repo, tool_env
from tests.engines.test_embed import build_tiny_encoder
from tests.filter.test_stage import raw_row


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-phi"))


def write_raw(path: Path, rows: list[dict]) -> Path:
    with atomic_dir(path) as d:
        write_shards(d, rows, shard_size=8)  # three shards: 8, 8, 4
    return path


@pytest.fixture
def raw(workdir, small_corpus) -> Path:
    """data/raw of the 20 real stdlib files, in three shards."""
    rows = [raw_row("stdlib", str(p.relative_to(small_corpus)), p.read_text()) for p in sorted(small_corpus.rglob("*.py"))]
    return write_raw(workdir / "data" / "raw", rows)


def cfg_for(tiny_dir: Path, **kw) -> EmbedConfig:
    return EmbedConfig(**{"embedding": f"hf:{tiny_dir}", "max_tokens": 64, "batch_size": 4, "cache_path": None, **kw})


def embed(root: Path, raw: Path, cfg: EmbedConfig, name: str = "embeddings") -> dict:
    return run(cfg, raw=raw, out=root / name, metrics_path=root / "metrics" / f"{name}.json", progress=False)


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of an output folder (its data, not phi1's marker)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.name != ".phi1-output"}


def test_one_vector_per_raw_file_keyed_by_id_and_text(workdir, raw, tiny_dir):
    from mlflow import MlflowClient

    metrics = embed(workdir, raw, cfg_for(tiny_dir))
    out = workdir / "embeddings"
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"part-0000{i}.parquet" for i in range(3)]
    ids, hashes, X, spec = read_vectors(out)
    rows = read_table(raw, ["id", "content"]).to_pylist()
    assert ids == [r["id"] for r in rows] and hashes == [content_sha256(r["content"]) for r in rows]
    assert X.dtype == np.float32 and X.shape == (20, 32)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # each shard's vectors are one Embedder.embed call over its texts, bit for bit
    emb = load_embedder(f"hf:{tiny_dir}", 64, 4)
    texts = [r["content"] for r in rows]
    expected = np.concatenate([emb.embed(texts[a:b], progress=False) for a, b in ((0, 8), (8, 16), (16, 20))])
    assert X.tobytes() == expected.tobytes()
    assert spec == emb.describe()

    on_disk = json.loads((workdir / "metrics" / "embeddings.json").read_text())
    assert on_disk == {"n_files": 20, "n_shards": 3, "embedding": f"hf:{tiny_dir}", "embedding_dim": 32,
                       "embedding_dtype": "float32", "embedding_model": spec["embedding_model"], "max_tokens": 64}
    assert metrics["cached"] == 0 and metrics["embed_files_per_s"] > 0  # run figures: MLflow only
    (r,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("phi1-test-data").experiment_id],
                                      "tags.`phi1.stage` = 'embed'")
    assert r.data.params["embedding"] == f"hf:{tiny_dir}" and r.data.metrics["run.cached"] == 0
    assert r.data.metrics["n_files"] == 20


def test_the_same_bytes_every_run_and_the_cache_reuses_unchanged_shards(workdir, raw, tiny_dir):
    embed(workdir, raw, cfg_for(tiny_dir), "a")
    embed(workdir, raw, cfg_for(tiny_dir), "b")
    fresh = digests(workdir / "a")
    assert fresh == digests(workdir / "b") and len(fresh) == 4  # three shards + spec.json

    cache = workdir / "cache"
    m1 = embed(workdir, raw, cfg_for(tiny_dir, cache_path=str(cache)), "c")
    m2 = embed(workdir, raw, cfg_for(tiny_dir, cache_path=str(cache)), "d")
    assert (m1["cached"], m2["cached"]) == (0, 20) and m2["embed_files_per_s"] is None
    assert digests(workdir / "c") == digests(workdir / "d") == fresh  # read back, the same bytes
    assert len(list(cache.glob("*.npy"))) == 3
    metrics = (workdir / "metrics" / "c.json").read_bytes()
    assert metrics == (workdir / "metrics" / "d.json").read_bytes() == (workdir / "metrics" / "a.json").read_bytes()

    # one text edited: its shard is embedded again, the other two come from the cache
    rows = read_table(raw).to_pylist()
    rows[10]["content"] += "\n# edited\n"
    raw2 = write_raw(workdir / "data" / "raw2", rows)
    m3 = embed(workdir, raw2, cfg_for(tiny_dir, cache_path=str(cache)), "e")
    assert m3["cached"] == 12
    m4 = embed(workdir, raw2, cfg_for(tiny_dir), "f")
    assert digests(workdir / "e") == digests(workdir / "f")
    # another key of the vectors (max_tokens) is another cache entry
    assert embed(workdir, raw, cfg_for(tiny_dir, cache_path=str(cache), max_tokens=32), "g")["cached"] == 0
    assert m4["cached"] == 0

    # a cache entry that is not a whole .npy of the right shape is a miss, not an error
    for p in cache.glob("*.npy"):
        p.write_bytes(p.read_bytes()[:50])
    assert embed(workdir, raw, cfg_for(tiny_dir, cache_path=str(cache)), "h")["cached"] == 0
    assert digests(workdir / "h") == fresh


def test_bad_inputs_are_one_line_errors_before_any_output(workdir, raw, tiny_dir):
    with pytest.raises(Phi1Error, match=r"raw dataset not found: .*nope \(run `phi1 ingest`\)"):
        embed(workdir, workdir / "nope", cfg_for(tiny_dir))
    with pytest.raises(Phi1Error, match="model directory not found: /no/such/encoder"):
        embed(workdir, raw, EmbedConfig(embedding="hf:/no/such/encoder"))
    no_content = write_shards_to(workdir / "data" / "bad", [{"id": "a", "text": "x"}])
    with pytest.raises(Phi1Error, match=r"raw .*bad: missing column 'content' \(has id, text\)"):
        embed(workdir, no_content, cfg_for(tiny_dir))
    assert not (workdir / "embeddings").exists() and not (workdir / "metrics").exists()


def write_shards_to(path: Path, rows: list[dict]) -> Path:
    with atomic_dir(path) as d:
        write_shards(d, rows)
    return path


def test_cli_embed_on_a_temp_params_file(workdir, raw, tiny_dir):
    from typer.testing import CliRunner

    from phi1.cli import app

    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({"embed": {"embedding": f"hf:{tiny_dir}", "max_tokens": 64}}))
    args = ["embed", "-p", str(params), "-S", "embed.cache_path=null", "--raw", str(raw),
            "--out", str(workdir / "emb"), "--metrics", str(workdir / "m.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((workdir / "m.json").read_text())["n_files"] == 20
    res = CliRunner().invoke(app, [*args, "-S", "embed.dtype=half"])
    assert res.exit_code == 2 and res.stderr.startswith("error: embed.dtype")


# ------------------------------------------------------------------ DVC: embed is not rerun


@pytest.mark.slow
def test_a_new_threshold_reruns_filter_but_not_embed(tmp_path, small_corpus, tiny_dir, _mlflow_template):
    """~1 min: the real dvc.yaml, with ingest's and annotate's outputs written here and
    `dvc commit`ed (their commands are not what this is about); `dvc repro filter` runs
    embed and filter, then filter.threshold 0.7 reruns filter alone (DVC skips embed),
    then 0.5 again brings filter back from DVC's run cache without running it."""
    from mlflow import MlflowClient

    p = yaml.safe_load((Path(__file__).parents[2] / "params.yaml").read_text())
    p["embed"].update({"embedding": f"hf:{tiny_dir}", "max_tokens": 64})
    p["filter"].update({"n_estimators": 20, "threshold": 0.5})
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copyfile(_mlflow_template, root / "mlflow.db")
    env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", PHI1_EXPERIMENT="phi1-dvc")
    repo = pipeline_repo(root, p, env)
    rows = [raw_row("stdlib", str(f.relative_to(small_corpus)), f.read_text()) for f in sorted(small_corpus.rglob("*.py"))]
    write_raw(root / "data" / "raw", rows)
    write_shards_to(root / "data" / "annotations", [
        {"id": r["id"], "score": float(i % 2), "label": i % 2, "rationale": "fixture", "backend": "heuristic",
         "model": "heuristic-v1"} for i, r in enumerate(rows)])
    for stage in ("ingest", "annotate"):
        (root / "metrics").mkdir(exist_ok=True)
        (root / "metrics" / f"{stage}.json").write_text("{}\n")
    repo.sh("dvc", "commit", "-f", "ingest", "annotate")

    def runs(stage: str) -> int:
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("phi1-dvc-data")
        return len(client.search_runs([exp.experiment_id], f"tags.`phi1.stage` = '{stage}'")) if exp else 0

    def set_threshold(value: float) -> None:
        p["filter"]["threshold"] = value
        (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    def lock_md5(path: str) -> str:
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        return next(o["md5"] for o in lock["stages"]["filter"]["outs"] if o["path"] == path)

    first = repo.sh("dvc", "repro", "filter").stdout
    assert "Running stage 'ingest'" not in first and "Running stage 'annotate'" not in first
    assert "Running stage 'embed'" in first and "Running stage 'filter'" in first
    assert (runs("embed"), runs("filter")) == (1, 1)
    kept_05 = lock_md5("data/codetextbook/filtered")

    set_threshold(0.7)
    status = repo.sh("dvc", "status", "filter").stdout
    assert "filter:" in status and "embed:" not in status  # only filter's params changed
    second = repo.sh("dvc", "repro", "filter").stdout
    assert "Stage 'embed' didn't change, skipping" in second and "Running stage 'filter'" in second
    assert (runs("embed"), runs("filter")) == (1, 2)
    assert json.loads((root / "metrics/filter.json").read_text())["threshold"] == 0.7

    set_threshold(0.5)
    third = repo.sh("dvc", "repro", "filter").stdout
    assert "Stage 'embed' didn't change, skipping" in third
    assert "Stage 'filter' is cached - skipping run, checking out outputs" in third  # DVC's run cache
    assert (runs("embed"), runs("filter")) == (1, 2)
    assert lock_md5("data/codetextbook/filtered") == kept_05
