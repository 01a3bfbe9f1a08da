import numpy as np
import pytest

from phi1.errors import Phi1Error
from phi1.engines.training.data import MASK_SOLUTION, BatchOrder, TokenShards


def test_every_row_once_per_epoch_across_processes_and_micro_batches():
    n, world, accum, micro = 37, 2, 3, 2
    order = BatchOrder(n, global_batch=world * accum * micro, seed=7)
    seen = []
    for step in range(n * 3 // order.global_batch + 1):
        rows = order.global_batch_rows(step)
        parts = [BatchOrder.local_rows(rows, accum, world, r) for r in range(world)]
        # The processes' slices are disjoint and together make the global batch.
        assert sorted(np.concatenate([p.ravel() for p in parts])) == sorted(rows)
        assert all(p.shape == (accum, micro) for p in parts)
        seen.extend(rows)
    for epoch in range(3):
        assert sorted(seen[epoch * n:(epoch + 1) * n]) == list(range(n))
    # Epochs are shuffled differently.
    assert seen[:n] != seen[n:2 * n]


def test_order_is_a_function_of_seed_and_step():
    a, b = BatchOrder(100, 8, seed=1), BatchOrder(100, 8, seed=1)
    later = [b.global_batch_rows(s) for s in (30, 5)]  # any query order
    assert np.array_equal(a.global_batch_rows(5), later[1])
    assert np.array_equal(a.global_batch_rows(30), later[0])
    assert not np.array_equal(BatchOrder(100, 8, seed=2).global_batch_rows(5), later[1])


def test_token_shards_read_across_shard_files(tokenized):
    folder = tokenized / "data" / "tokens" / "finetune"
    train = TokenShards(folder, "train")
    rows = np.array([0, len(train) - 1, 3])
    toks, mask = train.tokens(rows), train.mask(rows)
    assert toks.shape == mask.shape == (3, train.seq_len) and toks.dtype == np.int64
    pre = TokenShards(tokenized / "data" / "tokens" / "pretrain", "val")
    assert (pre.mask(np.array([0])) == MASK_SOLUTION).all()  # no mask: every token is a target


def test_missing_folder_is_a_phi1_error(tmp_path):
    with pytest.raises(Phi1Error, match="run `phi1 tokenize` first"):
        TokenShards(tmp_path, "train")
