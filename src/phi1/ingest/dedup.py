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


# ---------------------------------------------------------------------------------------
# Distributed dedup: datatrove pipeline steps, each stage its own executor run.
#
# The single-pass `find_duplicates` above holds every signature and the LSH index in one
# process. The stage runs the same decisions as three executor runs over the kept parquet
# files the read-and-filter pipeline wrote (`kept/<rank>.parquet`, columns hash and
# minhash) and the global order the stage computes from their metadata
# (`order/<stem>.npy`: each row's position in the global order):
#
#   ExactDedupShard   tasks: cfg.tasks   hashes sharded by prefix; per hash, every later
#                                        position is a duplicate_exact of the first
#   NearDedupBuckets  tasks: cfg.tasks   a slice of each LSH band's values (datasketch's
#                                        (b, r) for the threshold), band by band; sorted,
#                                        equal bands -> pairs (later, earlier) whose
#                                        MinHash estimate reaches the threshold
#   NearDedupCluster  tasks: 1           in global order: a document with a pair to an
#                                        earlier document still kept is duplicate_near
#                                        of the smallest such one
#
# This is the design of datatrove's MinhashDedupSignature/Buckets/Cluster/Filter (its
# steps would change the output: other shingles and hashes, no Jaccard check on a bucket
# match, and union-find clusters keep their root rather than the first document), built
# so that the decisions equal `find_duplicates`'s exactly: a later copy of a hash shares
# every band with the first, so collapsing equal hashes inside a band group is the same
# as leaving exact duplicates out; and "a pair to an earlier kept document" is exactly
# what the LSH query against the documents inserted so far finds.
# ---------------------------------------------------------------------------------------

def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band): the parameters datasketch's MinHashLSH picks for the threshold."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def _kept_files(work: str) -> list[str]:
    import glob
    import os

    return sorted(glob.glob(os.path.join(work, "kept", "*.parquet")))


def _positions(work: str, kept_file: str) -> np.ndarray:
    import os

    stem = os.path.basename(kept_file).removesuffix(".parquet")
    return np.load(os.path.join(work, "order", f"{stem}.npy"))


def _hash_shard(h: str, shards: int) -> int:
    return int(h[:12], 16) % shards


def _write_table(path: str, columns: dict) -> None:
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    columns = {k: v if isinstance(v, pa.Array) else pa.array(v, pa.int64()) for k, v in columns.items()}
    pq.write_table(pa.table(columns), path + ".tmp")
    os.replace(path + ".tmp", path)


class _DedupStage(PipelineStep):
    type = "🫂 - DEDUP"

    def __init__(self, work: str):
        super().__init__()
        self.work = str(work)


class ExactDedupShard(_DedupStage):
    """Exact dedup of one hash shard (hash prefix modulo world_size): writes
    `exact/<rank>.parquet` (pos, dup_of) of every document whose normalised hash appeared
    at an earlier position."""

    name = "phi1 exact dedup"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import pyarrow.parquet as pq

        first: dict[str, int] = {}
        later: list[tuple[str, int]] = []
        with self.track_time():
            for f in _kept_files(self.work):
                hashes = pq.read_table(f, columns=["hash"]).column("hash").to_pylist()
                pos = _positions(self.work, f)
                for h, p in zip(hashes, pos.tolist(), strict=True):
                    if _hash_shard(h, world_size) != rank:
                        continue
                    q = first.get(h)
                    if q is None:
                        first[h] = p
                    else:
                        later.append((h, max(p, q)))
                        first[h] = min(p, q)
            dups = sorted((p, first[h]) for h, p in later)
            self.stat_update("duplicate_exact", value=len(dups))
            _write_table(f"{self.work}/exact/{rank:05d}.parquet",
                         {"pos": [p for p, _ in dups], "dup_of": [q for _, q in dups]})
        return iter(())


class NearDedupBuckets(_DedupStage):
    """One slice (rank of world_size) of every LSH band, band by band: the documents
    whose first value in the band is rank modulo world_size. Writes `edges/<rank>.parquet`
    (pos, other) for every pair with equal band values whose MinHash estimate of
    Jaccard similarity reaches the threshold, pos the later one. With exact dedup on,
    only the first document of each hash takes part (its later copies share every band
    and are exact duplicates). A task holds 1/world_size of one band's signatures."""

    name = "phi1 near dedup buckets"

    def __init__(self, work: str, threshold: float, num_perm: int, exact: bool):
        super().__init__(work)
        self.threshold, self.num_perm, self.exact = threshold, num_perm, exact
        self.bands, self.rows = lsh_bands(threshold, num_perm)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        edges: set[tuple[int, int]] = set()  # a pair found in several bands counts once
        with self.track_time():
            for band in range(self.bands):
                lo, hi = band * self.rows, (band + 1) * self.rows
                sigs, poss, hashes = self._slice(lo, rank, world_size)
                if sigs:
                    edges.update(self._pairs(sigs, poss, hashes, lo, hi))
            edges_ = sorted(edges)
            self.stat_update("pairs", value=len(edges_))
            _write_table(f"{self.work}/edges/{rank:05d}.parquet",
                         {"pos": [a for a, _ in edges_], "other": [b for _, b in edges_]})
        return iter(())

    def _slice(self, lo: int, rank: int, world_size: int) -> tuple[list, list, list]:
        import pyarrow.parquet as pq

        sigs, poss, hashes = [], [], []
        for f in _kept_files(self.work):
            t = pq.read_table(f, columns=["hash", "minhash"])
            for h, mh, p in zip(t.column("hash").to_pylist(), t.column("minhash").to_pylist(),
                                _positions(self.work, f).tolist(), strict=True):
                if not mh:
                    continue
                values = np.frombuffer(mh, dtype=np.uint32)
                if int(values[lo]) % world_size == rank:
                    sigs.append(values)
                    poss.append(p)
                    hashes.append(h)
        return sigs, poss, hashes

    def _pairs(self, sigs, poss, hashes, lo, hi) -> list[tuple[int, int]]:
        matrix = np.stack(sigs)
        band = matrix[:, lo:hi]
        order = np.lexsort(band.T[::-1])  # rows sorted by their band values
        band = band[order]
        cuts = np.flatnonzero(np.any(band[1:] != band[:-1], axis=1)) + 1
        edges = []
        for group in np.split(order, cuts):
            if len(group) < 2:
                continue
            group = sorted(group.tolist(), key=poss.__getitem__)
            if self.exact:  # the first of each hash only
                seen, kept = set(), []
                for g in group:
                    if hashes[g] not in seen:
                        seen.add(hashes[g])
                        kept.append(g)
                group = kept
            for k in range(1, len(group)):
                close = np.mean(matrix[group[:k]] == matrix[group[k]], axis=1) >= self.threshold
                edges += [(poss[group[k]], poss[group[j]]) for j in np.flatnonzero(close).tolist()]
        return edges


class NearDedupCluster(_DedupStage):
    """The decisions, in global order (one task): exact duplicates from `exact/`, then a
    document with a pair (`edges/`) to an earlier document that is still kept is a
    duplicate_near of the smallest such one. Writes `verdicts.parquet` (pos, reason,
    dup_of) of the removed documents, by position."""

    name = "phi1 dedup cluster"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import glob

        import pyarrow as pa
        import pyarrow.parquet as pq

        def load(folder: str, cols: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
            files = sorted(glob.glob(f"{self.work}/{folder}/*.parquet"))
            if not files:
                return np.empty(0, np.int64), np.empty(0, np.int64)
            t = pa.concat_tables([pq.read_table(f) for f in files])
            return (t.column(cols[0]).to_numpy().astype(np.int64), t.column(cols[1]).to_numpy().astype(np.int64))

        with self.track_time():
            ex_pos, ex_of = load("exact", ("pos", "dup_of"))
            pos, other = load("edges", ("pos", "other"))
            order = np.lexsort((other, pos))  # by later document, then earlier: min(close) comes first
            pos, other = pos[order].tolist(), other[order].tolist()
            removed: dict[int, int] = {}
            i = 0
            while i < len(pos):
                p = pos[i]
                while i < len(pos) and pos[i] == p:
                    if p not in removed and other[i] not in removed:
                        removed[p] = other[i]
                    i += 1
            verdicts = sorted([(int(p), "duplicate_exact", int(q)) for p, q in zip(ex_pos, ex_of)]
                              + [(p, "duplicate_near", q) for p, q in removed.items()])
            self.stat_update("duplicate_near", value=len(removed))
            _write_table(f"{self.work}/verdicts.parquet", {
                "pos": pa.array([v[0] for v in verdicts], pa.int64()),
                "reason": pa.array([v[1] for v in verdicts], pa.string()),
                "dup_of": pa.array([v[2] for v in verdicts], pa.int64())})
        return iter(())


def run_dedup(cfg, work) -> None:
    """The dedup stages over `work` (kept/, order/ written), each a run of the configured
    executor (phi1.ingest.executors.run_pipeline) that returns when its tasks are done:
    exact (cfg.tasks tasks), buckets (cfg.tasks), cluster (1). Writes
    `work/verdicts.parquet`; with both kinds of dedup off, nothing."""
    from pathlib import Path

    from phi1.ingest.executors import run_pipeline

    work = Path(work)
    near = cfg.minhash_threshold is not None
    if not cfg.dedup_exact and not near:
        return
    if cfg.dedup_exact:
        run_pipeline(cfg, [ExactDedupShard(str(work))], work / "logs-dedup-exact", cfg.tasks)
    if near:
        step = NearDedupBuckets(str(work), cfg.minhash_threshold, cfg.minhash_num_perm, cfg.dedup_exact)
        run_pipeline(cfg, [step], work / "logs-dedup-buckets", cfg.tasks)
    run_pipeline(cfg, [NearDedupCluster(str(work))], work / "logs-dedup-cluster", 1)
