"""Diversity metrics of synthetic data: how many topics and names it covers, how much of it
nearly repeats itself, and how close its items sit in embedding space.

    near_duplicate_rate(texts, threshold=0.8)      # share of items with a MinHash near twin
    mean_pairwise_similarity(unit_vectors)         # mean cosine over all distinct pairs
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> set[bytes]:
    words = WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicate_rate(texts: Sequence[str], threshold: float = 0.8, num_perm: int = 128, seed: int = 1) -> float:
    """Fraction of texts whose estimated Jaccard similarity (word 5-gram MinHash) to some
    other text is at least `threshold`."""
    from datasketch import MinHash, MinHashLSH

    if len(texts) < 2:
        return 0.0
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch(list(shingles(t)) or [b""])
        lsh.insert(str(i), m)
        hashes.append(m)
    dup = 0
    for i, m in enumerate(hashes):
        # LSH candidates are probable; confirm with the MinHash estimate itself.
        if any(k != str(i) and hashes[int(k)].jaccard(m) >= threshold for k in lsh.query(m)):
            dup += 1
    return dup / len(texts)


def mean_pairwise_similarity(vectors: np.ndarray) -> float | None:
    """Mean cosine similarity over all pairs i != j of unit row vectors, in O(n):
    sum_{i != j} v_i.v_j = |sum v|^2 - sum |v_i|^2."""
    n = len(vectors)
    if n < 2:
        return None
    v = vectors.astype(np.float64)
    total = v.sum(axis=0)
    off_diagonal = float(total @ total) - float((v * v).sum())
    return off_diagonal / (n * (n - 1))


__all__ = ["near_duplicate_rate", "mean_pairwise_similarity", "shingles"]
