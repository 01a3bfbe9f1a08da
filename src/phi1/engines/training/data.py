"""Token shards on disk, and the order a training run reads them in.

    data = TokenShards("data/tokens/pretrain", "train")      # memory-mapped .npy shards
    order = BatchOrder(len(data), global_batch=16, seed=1234)
    ids = order.global_batch(step)                           # row ids of optimizer step `step`

Layout of a token folder (written by `phi1 tokenize`): `meta.json`, and per split
(`train`, `val`) shards `<split>-NNNNN.npy` of shape (rows, seq_len), plus
`<split>-NNNNN.mask.npy` (uint8, same shape) for exercise data, where 0 marks padding,
1 a prompt token and 2 a solution token.

The read order is a pure function of (seed, step): epoch e is a permutation of all rows
seeded by (seed, e), epochs are laid end to end, and step s takes the s-th run of
`global_batch` rows from that stream. A resumed run therefore needs only its step to
read on exactly where it stopped, and every row is read once per epoch.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from phi1.errors import Phi1Error

MASK_PAD, MASK_PROMPT, MASK_SOLUTION = 0, 1, 2
META = "meta.json"


def read_meta(folder: str | Path) -> dict:
    p = Path(folder) / META
    if not p.is_file():
        raise Phi1Error(f"token folder {folder} has no {META}; run `phi1 tokenize` first")
    return json.loads(p.read_text())


class TokenShards:
    """One split of a token folder: rows of `seq_len` token ids (and masks, when present)."""

    def __init__(self, folder: str | Path, split: str):
        self.folder = Path(folder)
        self.meta = read_meta(folder)
        info = self.meta["splits"].get(split)
        if not info or not info["rows"]:
            raise Phi1Error(f"token folder {folder} has no {split!r} rows")
        self.split = split
        self.seq_len = int(self.meta["seq_len"])
        self.files = [self.folder / s["file"] for s in info["shards"]]
        for f in self.files:
            if not f.is_file():
                raise Phi1Error(f"token shard missing: {f}")
        self.offsets = np.cumsum([0] + [s["rows"] for s in info["shards"]])
        self.has_mask = bool(self.meta.get("has_mask"))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def _tokens(self) -> list[np.ndarray]:
        return [np.load(f, mmap_mode="r") for f in self.files]

    @cached_property
    def _masks(self) -> list[np.ndarray]:
        return [np.load(f.with_suffix(".mask.npy"), mmap_mode="r") for f in self.files]

    def _gather(self, arrays: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.seq_len), dtype=arrays[0].dtype)
        for i, (s, r) in enumerate(zip(shard, rows)):
            out[i] = arrays[s][r - self.offsets[s]]
        return out

    def tokens(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), seq_len) int64 token ids."""
        return self._gather(self._tokens, np.asarray(rows)).astype(np.int64)

    def mask(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), seq_len) uint8 mask (MASK_PAD / MASK_PROMPT / MASK_SOLUTION)."""
        if not self.has_mask:
            return np.full((len(rows), self.seq_len), MASK_SOLUTION, dtype=np.uint8)
        return self._gather(self._masks, np.asarray(rows))


class BatchOrder:
    """Which rows each optimizer step reads: epochs of seeded permutations, end to end."""

    def __init__(self, n_rows: int, global_batch: int, seed: int):
        if n_rows < 1:
            raise Phi1Error("no training rows")
        self.n, self.global_batch, self.seed = n_rows, global_batch, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:  # only the current and next epoch are ever needed
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = rng.permutation(self.n)
        return self._perms[epoch]

    def global_batch_rows(self, step: int) -> np.ndarray:
        """Row ids read by optimizer step `step` (0-based), over all processes and micro-batches."""
        pos = np.arange(step * self.global_batch, (step + 1) * self.global_batch)
        epochs, within = np.divmod(pos, self.n)
        return np.array([self._perm(int(e))[i] for e, i in zip(epochs, within)], dtype=np.int64)

    def epoch_of(self, step: int) -> float:
        return step * self.global_batch / self.n

    @staticmethod
    def local_rows(global_rows: np.ndarray, accum: int, world: int, rank: int) -> np.ndarray:
        """Split a global batch into (accum, micro) rows for process `rank`.

        Laid out as (accum, world, micro): micro-step a of every process reads a
        disjoint slice, so the processes together read each global row exactly once."""
        micro = len(global_rows) // (accum * world)
        return global_rows.reshape(accum, world, micro)[:, rank, :]
