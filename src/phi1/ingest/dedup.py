"""Exact and MinHash near-duplicate detection.

    step = DedupSignature(num_perm=128, ngram=5, seed=1234)      # in the datatrove pipeline
    verdicts = find_duplicates(records, threshold=0.85, num_perm=128, exact=True)

Signatures (the normalised-content sha256 and the MinHash) are computed per document
inside the parallel datatrove pipeline; the decisions are taken afterwards in one
global pass over all documents in a fixed order (sources in params order, then path),
so the first file of a duplicate group is kept whatever the number of tasks.

Near duplicates: word n-gram shingles, MinHash (datasketch, affine32 scheme) and a
MinHashLSH index; an LSH candidate counts only when the MinHash estimate of their
Jaccard similarity reaches the threshold, which removes most LSH false positives.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional

import numpy as np
from datasketch import MinHash, MinHashLSH
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

_WORD = re.compile(r"\w+")
_MIX = np.uint64(0x100000001B3)  # FNV-64 prime: combines token hashes into a shingle hash


def normalise(text: str) -> str:
    """Line endings to \\n, trailing whitespace per line dropped, blank lines at both ends dropped."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def content_hash(text: str) -> str:
    """sha256 hex of the normalised text: the exact-dedup key (column `hash` of data/raw)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """Distinct 32-bit hashes of the word n-grams of `text` (all words as one shingle when
    there are fewer than n; empty when there are none). crc32 and wrapping uint64
    arithmetic are stable across processes and runs, unlike Python's salted hash()."""
    words = _WORD.findall(text)
    if not words:
        return np.empty(0, dtype=np.uint32)
    table = {w: zlib.crc32(w.encode()) for w in set(words)}  # words repeat: hash each once
    ids = np.fromiter(map(table.__getitem__, words), dtype=np.uint64, count=len(words))
    n = min(ngram, len(ids))
    m = len(ids) - n + 1
    h = ids[:m].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            h = h * _MIX + ids[k : k + m]
    folded = ((h >> np.uint64(32)) ^ h) & np.uint64(0xFFFFFFFF)
    return np.unique(folded.astype(np.uint32))


@lru_cache(maxsize=4)
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    return MinHash(num_perm=num_perm, seed=seed).permutations


def new_minhash(num_perm: int, seed: int, hashvalues: Optional[np.ndarray] = None) -> MinHash:
    return MinHash(num_perm=num_perm, seed=seed, hashfunc=int, hashvalues=hashvalues,
                   permutations=_permutations(num_perm, seed), scheme="affine32")


def minhash_values(text: str, num_perm: int, ngram: int, seed: int) -> Optional[np.ndarray]:
    """The MinHash signature (uint32[num_perm]) of the text's shingles; None without words."""
    shingles = shingle_hashes(text, ngram)
    if not len(shingles):
        return None
    m = new_minhash(num_perm, seed)  # hashfunc=int: the shingles are hashed already
    for start in range(0, len(shingles), 20_000):  # bounded temp memory: chunk x num_perm
        m.update_batch(shingles[start : start + 20_000].tolist())
    return m.hashvalues.astype(np.uint32)


class DedupSignature(PipelineStep):
    """Adds `hash` (normalised sha256) and `minhash` (bytes of the signature, b"" when the
    text has no words) to each document's metadata."""

    name = "phi1 dedup signature"
    type = "🫂 - DEDUP"

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1234, near: bool = True):
        super().__init__()
        self.num_perm, self.ngram, self.seed, self.near = num_perm, ngram, seed, near

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.metadata["hash"] = content_hash(doc.text)
                values = minhash_values(doc.text, self.num_perm, self.ngram, self.seed) if self.near else None
                doc.metadata["minhash"] = values.tobytes() if values is not None else b""
            self.stat_update("signed")
            yield doc


@dataclass
class Verdict:
    reason: Optional[str] = None  # None: kept; else "duplicate_exact" / "duplicate_near"
    duplicate_of: Optional[int] = None  # index of the kept record it duplicates


def find_duplicates(
    records: Iterable[tuple[str, bytes]],
    threshold: Optional[float],
    num_perm: int,
    seed: int,
    exact: bool = True,
) -> list[Verdict]:
    """One verdict per (hash, minhash bytes) record, taken in the given order: the first of
    each duplicate group is kept. `threshold=None` turns near-dedup off."""
    verdicts: list[Verdict] = []
    first_by_hash: dict[str, int] = {}
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm) if threshold is not None else None
    signatures: dict[int, np.ndarray] = {}
    for i, (h, mh) in enumerate(records):
        if exact and h in first_by_hash:
            verdicts.append(Verdict("duplicate_exact", first_by_hash[h]))
            continue
        first_by_hash.setdefault(h, i)
        if lsh is not None and mh:
            values = np.frombuffer(mh, dtype=np.uint32)
            m = new_minhash(num_perm, seed, values)
            # the LSH gives candidates; keep those whose estimated Jaccard reaches the threshold
            close = [j for j in lsh.query(m) if np.mean(signatures[j] == values) >= threshold]
            if close:
                verdicts.append(Verdict("duplicate_near", min(close)))
                continue
            lsh.insert(i, m)
            signatures[i] = values
        verdicts.append(Verdict())
    return verdicts
