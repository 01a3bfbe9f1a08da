"""The three detectors, each giving (training unit, benchmark task, score) with score in [0, 1].

    ngram_pairs(texts, index, floor)                       # item-level 13-gram containment
    embedding_pairs(unit_vecs, ref_vecs, floor, top_k)     # cosine; also the AST top-k
    ast_pairs(units, refs, floor, allowed=None)            # AST match rate, prefiltered

Only pairs scoring at least `floor` (the lowest threshold anyone asks about) are kept.
The AST detector computes exact tree edit distances only for pairs that survive, in
order: size buckets, the hashed label-histogram bound, the embedding top-k (when given),
then the pre- and post-order sequence bounds (see phi1.decontaminate.astmatch). The first
two and the last are lossless: a pair they drop cannot reach `floor`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from phi1.decontaminate.astmatch import HIST_DIM, sequence_bound, ted
from phi1.decontaminate.ngram import NGramIndex
from phi1.decontaminate.references import Reference
from phi1.decontaminate.units import Unit

EPS = 1e-9


@dataclass
class AstStats:
    """How many pairs each stage of the AST detector let through."""

    pairs: int = 0
    """units x tasks with a tree."""
    after_size: int = 0
    after_labels: int = 0
    after_top_k: int = 0
    after_sequence: int = 0
    identical: int = 0
    """Pairs with equal normalised trees (rate 1, no TED needed)."""
    ted_computed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def ngram_pairs(texts: Sequence[str], index: NGramIndex, floor: float) -> list[tuple[int, int, float]]:
    """(item, task, share of the task's n-grams in the item) at or above floor."""
    out = []
    for i, text in enumerate(texts):
        for r, score in index.scores(text).items():
            if score >= floor - EPS:
                out.append((i, r, score))
    return out


def embedding_pairs(unit_vecs: np.ndarray, ref_vecs: np.ndarray, floor: float,
                    top_k: Optional[int] = None) -> tuple[list[tuple[int, int, float]], Optional[np.ndarray]]:
    """(unit, task, cosine) at or above floor, and (when top_k) each unit's top-k tasks as a
    boolean (units, tasks) mask for the AST detector."""
    if len(unit_vecs) == 0 or len(ref_vecs) == 0:
        return [], (np.zeros((len(unit_vecs), len(ref_vecs)), dtype=bool) if top_k else None)
    sims = unit_vecs @ ref_vecs.T  # (units, tasks)
    us, rs = np.nonzero(sims >= floor - EPS)
    pairs = [(int(u), int(r), float(min(1.0, sims[u, r]))) for u, r in zip(us, rs)]
    mask = None
    if top_k:
        k = min(top_k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        mask = np.zeros(sims.shape, dtype=bool)
        np.put_along_axis(mask, top, True, axis=1)
    return pairs, mask


def _histograms(trees: Sequence, dim: int) -> np.ndarray:
    sizes = np.fromiter((t.size for t in trees), dtype=np.int64, count=len(trees))
    if not len(trees):
        return np.zeros((0, dim), dtype=np.int16)
    owner = np.repeat(np.arange(len(trees)), sizes)
    labels = np.fromiter((x % dim for t in trees for x in t.labels), dtype=np.int64, count=int(sizes.sum()))
    flat = np.bincount(owner * dim + labels, minlength=len(trees) * dim)
    return flat.reshape(len(trees), dim).astype(np.int32)


def candidate_pairs(units: Sequence[Unit], refs: Sequence[Reference], floor: float,
                    allowed: Optional[np.ndarray] = None, use_bounds: bool = True,
                    stats: Optional[AstStats] = None) -> list[tuple[int, int]]:
    """(unit, task) pairs that may reach `floor`: size and label bounds (unless use_bounds
    is False), then the `allowed` mask (embedding top-k) when given."""
    stats = stats if stats is not None else AstStats()
    ref_ids = [j for j, r in enumerate(refs) if r.tree is not None]
    n_pairs = len(units) * len(ref_ids)
    stats.pairs += n_pairs  # every count adds up over calls (decontaminate scores a chunk at a time)
    if not units or not ref_ids:
        return []
    if not use_bounds:
        pairs = [(u, j) for u in range(len(units)) for j in ref_ids if allowed is None or allowed[u, j]]
        stats.after_size += n_pairs
        stats.after_labels += n_pairs
        stats.after_top_k += len(pairs)
        return pairs
    u_size = np.fromiter((u.tree.size for u in units), dtype=np.int64, count=len(units))
    u_hist = _histograms([u.tree for u in units], HIST_DIM)
    order = np.argsort(u_size, kind="stable")
    sorted_size = u_size[order]
    out: list[tuple[int, int]] = []
    for j in ref_ids:
        tree = refs[j].tree
        s = tree.size
        lo = math.ceil(floor * s - EPS)
        hi = math.floor(s / floor + EPS)
        cand = order[np.searchsorted(sorted_size, lo, "left") : np.searchsorted(sorted_size, hi, "right")]
        stats.after_size += len(cand)
        if not len(cand):
            continue
        common = np.minimum(u_hist[cand], tree.histogram(HIST_DIM)).sum(axis=1)
        keep = cand[common >= floor * np.maximum(u_size[cand], s) - EPS]
        stats.after_labels += len(keep)
        if allowed is not None:
            keep = keep[allowed[keep, j]]
        stats.after_top_k += len(keep)
        out.extend((int(u), j) for u in keep)
    if allowed is None:
        stats.after_top_k = stats.after_labels  # no top-k: nothing more dropped
    return out


def ast_pairs(units: Sequence[Unit], refs: Sequence[Reference], floor: float,
              allowed: Optional[np.ndarray] = None, use_bounds: bool = True, min_nodes: int = 1,
              progress: bool = True, stats: Optional[AstStats] = None) -> list[tuple[int, int, float]]:
    """(unit, task, AST match rate) at or above floor; trees both under `min_nodes` count
    only when identical."""
    from phi1.engines.progress import tracked

    stats = stats if stats is not None else AstStats()
    start = time.perf_counter()
    pairs = candidate_pairs(units, refs, floor, allowed, use_bounds, stats)
    out = []
    for u, j in tracked(pairs, "ast match", enabled=progress):
        a, b = units[u].tree, refs[j].tree
        if a.digest == b.digest:
            stats.identical += 1
            out.append((u, j, 1.0))
            continue
        big = max(a.size, b.size)
        if big < min_nodes:
            continue
        if use_bounds:
            limit = math.floor((1 - floor) * big + EPS)
            if sequence_bound(a.pre, b.pre, limit) > limit or sequence_bound(a.labels, b.labels, limit) > limit:
                continue
        stats.after_sequence += 1
        stats.ted_computed += 1
        score = 1.0 - ted(a, b) / big
        if score >= floor - EPS:
            out.append((u, j, score))
    if not use_bounds:
        stats.after_sequence = stats.ted_computed
    stats.seconds = round(stats.seconds + time.perf_counter() - start, 3)  # summed over calls
    return out


__all__ = ["AstStats", "ngram_pairs", "embedding_pairs", "candidate_pairs", "ast_pairs"]
