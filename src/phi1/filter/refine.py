"""The quality filter's second pass: a costlier embedding for the files the first is unsure of.

    phi1 filter -S filter.refine.embedding=minilm     # with embed.embedding: model2vec

A cascade, as the phi-1 recipe's filter would run at The Stack's scale: cheap vectors
(the `embed` stage's, e.g. model2vec) score every file; the files whose score lies in the
band [threshold - margin, threshold + margin), where the cheap forest is least sure, are
embedded again with the better model (e.g. MiniLM) and rescored by a forest trained on
the better vectors of the annotated files. Files outside the band keep their first score.
MiniLM then embeds the annotations plus the band instead of every file.

With `batch_size` 1 (the default) a file's vector does not depend on the files embedded
with it (no padding), so `FileCache` keeps one vector per text: a new threshold, margin
or forest embeds only the files it has not seen.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from phi1.config import RefineConfig
from phi1.engines.embed import Embedder
from phi1.engines.vectors import load_cached, model_key, save_cached


def band(scores: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """Boolean mask of the scores the second pass redoes: threshold - margin <= s < threshold + margin."""
    return (scores >= threshold - margin) & (scores < threshold + margin)


def cascade(first: np.ndarray, refined: np.ndarray, rescored: np.ndarray) -> np.ndarray:
    """The final scores: `first`, with the files in `refined` replaced by `rescored` (the
    second forest's scores of those files, in row order)."""
    out = np.array(first, dtype=np.float64, copy=True)
    out[refined] = rescored
    return out


class FileCache:
    """Second-pass vectors of single texts in `folder`, one .npy per (model, text); None disables it.

    Only sound when a text's vector does not depend on its batch neighbours, i.e. batch_size 1."""

    def __init__(self, folder: str | None, embedder: Embedder, cfg: RefineConfig) -> None:
        self.folder = Path(folder) if folder and cfg.batch_size == 1 else None
        self.prefix = model_key(embedder, cfg.batch_size) if self.folder else ""
        self.dim = embedder.dim

    def _path(self, content_hash: str) -> Path:
        key = hashlib.sha256(f"{self.prefix}\n{content_hash}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"  # type: ignore[operator]

    def get(self, content_hash: str) -> np.ndarray | None:
        return None if self.folder is None else load_cached(self._path(content_hash), (self.dim,))

    def put(self, content_hash: str, v: np.ndarray) -> None:
        if self.folder is not None:
            save_cached(self._path(content_hash), v)


def embed_cached(
    embedder: Embedder, cache: FileCache, texts: Sequence[str], hashes: Sequence[str], progress: bool = True,
) -> tuple[np.ndarray, int]:
    """(float32 (n, dim) vectors of `texts`, how many came from the cache)."""
    X = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    todo = []
    for r, h in enumerate(hashes):
        v = cache.get(h)
        if v is None:
            todo.append(r)
        else:
            X[r] = v
    if todo:
        V = embedder.embed([texts[r] for r in todo], progress=progress, desc="refine embed")
        for r, v in zip(todo, V):
            X[r] = v
            cache.put(hashes[r], v)
    return X, len(texts) - len(todo)


__all__ = ["band", "cascade", "FileCache", "embed_cached"]
