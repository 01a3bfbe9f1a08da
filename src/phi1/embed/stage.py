"""`phi1 embed`: a vector for every file of data/raw, the quality filter's features.

    phi1 embed                                   # params.yaml section `embed`
    phi1 embed -S embed.dtype=auto               # opt-in bf16 where native (faster, per machine)

The slow half of the phi-1 quality filter, split off so that `filter` (the classifier and
its keep rule) reruns in seconds when only `filter.*` changes: DVC sees data/embeddings
unchanged and skips this stage.

Each raw shard becomes one output shard with the same rows in the same order: `id`,
`content_sha256` (sha256 of the exact text, so a reader can tell the vectors belong to
this data/raw) and `embedding` (float32 unit vector, a fixed-size list). A shard's
vectors come from one `Embedder.embed` call over its texts (length-sorted batches), so
they are the same bytes on every run. `spec.json` holds `Embedder.describe()`: what a
consumer needs to embed new text the same way (filter copies it into models/quality).
The format is phi1.engines.vectors'.

The cache (`embed.cache_path`, outside DVC) keeps each shard's vectors under a key that
hashes the shard's texts, the model (its files, for `hf:<dir>`), the embedding keys, the
library versions and the embedding code. Vectors are reused per shard, not per file: a
file's vector depends on the texts it was batched with (padding), so reusing a single
file's vector in another batch could change the bytes. An unchanged shard is never
embedded twice, e.g. after an edit to the floor (config.py) reruns every stage.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from phi1.config import EmbedConfig
from phi1.engines.embed import Embedder, load_embedder
from phi1.engines.vectors import (
    SPEC_FILE, content_sha256, load_cached, model_key, save_cached, write_spec, write_vectors,
)
from phi1.errors import Phi1Error
from phi1.io import check_output, dataset_shards, outputs


def raw_shards(raw: Path) -> list[Path]:
    """The parquet shards of data/raw, checked for the columns this stage reads."""
    files = dataset_shards(raw, "raw", "ingest")
    names = pq.read_schema(files[0]).names
    for col in ("id", "content"):
        if col not in names:
            raise Phi1Error(f"raw {raw}: missing column {col!r} (has {', '.join(names)})")
    return files


# --------------------------------------------------------------------------- cache


class ShardCache:
    """Vectors of whole raw shards in `folder`, one .npy per key; None disables it."""

    def __init__(self, folder: str | None, embedder: Embedder, cfg: EmbedConfig) -> None:
        self.folder = Path(folder) if folder else None
        self.prefix = model_key(embedder, cfg.batch_size) if self.folder else ""
        self.dim = embedder.dim

    def key(self, hashes: list[str]) -> str:
        h = hashlib.sha256(self.prefix.encode())
        for x in hashes:
            h.update(x.encode())
            h.update(b"\n")
        return h.hexdigest()

    def get(self, key: str, n: int) -> np.ndarray | None:
        return None if self.folder is None else load_cached(self.folder / f"{key}.npy", (n, self.dim))

    def put(self, key: str, X: np.ndarray) -> None:
        if self.folder is not None:
            save_cached(self.folder / f"{key}.npy", X)


# --------------------------------------------------------------------------- stage


def run(cfg: EmbedConfig, raw: Path, out: Path, metrics_path: Path, progress: bool = True) -> dict[str, Any]:
    """Embed every file of `raw` into `out` (one shard per raw shard); return the metrics."""
    import mlflow

    from phi1.tracking import stage_run, tracked_metrics

    t0 = time.perf_counter()
    raw, out, metrics_path = Path(raw), Path(out), Path(metrics_path)
    # Every check a user can fail runs before the slow part and before an MLflow run exists.
    files = raw_shards(raw)
    inputs = [raw]
    for path, kind in ((out, "dir"), (metrics_path, "file")):
        check_output(path, inputs, kind)
    embedder = load_embedder(cfg.embedding, cfg.max_tokens, cfg.batch_size, dtype=cfg.dtype)
    cache = ShardCache(cfg.cache_path, embedder, cfg)

    with stage_run("embed", cfg, inputs=inputs), outputs(inputs) as staged:
        folder = staged.dir(out)
        n = cached = 0
        embed_s = 0.0
        for i, f in enumerate(files):
            table = pq.read_table(f, columns=["id", "content"])
            ids = table.column("id").to_pylist()
            texts = table.column("content").to_pylist()
            hashes = [content_sha256(t) for t in texts]
            key = cache.key(hashes)
            X = cache.get(key, len(texts))
            if X is None:
                desc = f"embed {i + 1}/{len(files)}" if len(files) > 1 else "embed"
                t = time.perf_counter()
                X = embedder.embed(texts, progress=progress, desc=desc)
                embed_s += time.perf_counter() - t
                cache.put(key, X)
            else:
                cached += len(texts)
            write_vectors(folder / f"part-{i:05d}.parquet", ids, hashes, X)
            n += len(texts)
        spec = embedder.describe()
        write_spec(folder, spec)

        computed = n - cached
        metrics: dict[str, Any] = {
            "n_files": n,
            "n_shards": len(files),
            "embedding": cfg.embedding,
            "embedding_model": spec["embedding_model"],
            "embedding_dim": embedder.dim,
            "embedding_dtype": embedder.dtype,
            "max_tokens": cfg.max_tokens,
            # run figures (MLflow only): what the cache saved this run, and the speed
            "cached": cached,
            "embed_seconds": round(embed_s, 3),
            "embed_files_per_s": round(computed / embed_s, 2) if computed and embed_s > 0 else None,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        staged.json(metrics_path, tracked_metrics(metrics))  # without run figures: those go to MLflow
        staged.commit()

        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _is_number(v)})
        mlflow.log_artifact(str(out / SPEC_FILE), "embeddings")
        mlflow.log_artifact(str(metrics_path), "metrics")
    return metrics


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


__all__ = ["run", "ShardCache"]
