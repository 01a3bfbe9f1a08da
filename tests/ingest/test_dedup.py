"""Exact and near-duplicate detection, and signatures that are stable across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from phi1.ingest.dedup import (
    DedupSignature,
    content_hash,
    find_duplicates,
    minhash_values,
    normalise,
    shingle_hashes,
)

from .conftest import GOOD, STDLIB

PERM, NGRAM, SEED = 128, 5, 1234


def _record(text):
    values = minhash_values(text, PERM, NGRAM, SEED)
    return content_hash(text), values.tobytes() if values is not None else b""


def test_normalised_hash_ignores_whitespace_noise_only():
    assert normalise("\n\nx = 1   \r\ny = 2\t\n\n") == "x = 1\ny = 2"
    assert content_hash("x = 1\n") == content_hash("\nx = 1   \r\n\n")
    assert content_hash("x = 1\n") != content_hash("x = 2\n")
    assert content_hash("if x:\n    y\n") != content_hash("if x:\ny\n")  # indentation is meaning


def test_shingles():
    assert len(shingle_hashes("a b c d e f", 5)) == 2
    assert len(shingle_hashes("a b", 5)) == 1  # fewer words than n: one shingle
    assert len(shingle_hashes("+-*/", 5)) == 0
    assert minhash_values("+-*/", PERM, NGRAM, SEED) is None


def test_signatures_do_not_depend_on_the_process_hash_seed():
    code = ("from phi1.ingest.dedup import minhash_values; import sys; "
            "sys.stdout.write(minhash_values(open(sys.argv[1]).read(), 128, 5, 1234).tobytes().hex())")
    outs = {
        subprocess.run([sys.executable, "-c", code, str(STDLIB / "heapq.py")], capture_output=True, text=True,
                       env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, check=True).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    here = minhash_values((STDLIB / "heapq.py").read_text(), PERM, NGRAM, SEED)
    assert outs == {here.tobytes().hex()}


def test_exact_and_near_duplicates_keep_the_first():
    near = GOOD.replace("Return the index", "Give back the index", 1)
    other = (STDLIB / "heapq.py").read_text()
    records = [_record(t) for t in (GOOD, other, GOOD.replace("\n", "  \n"), near, "+-*/", "+-*/  ")]
    verdicts = find_duplicates(records, threshold=0.85, num_perm=PERM, seed=SEED)
    assert [(v.reason, v.duplicate_of) for v in verdicts] == [
        (None, None), (None, None), ("duplicate_exact", 0), ("duplicate_near", 0),
        (None, None), ("duplicate_exact", 4),  # no words: no MinHash, but still an exact duplicate
    ]
    # order decides which one survives
    swapped = find_duplicates([records[3], records[0]], threshold=0.85, num_perm=PERM, seed=SEED)
    assert [v.reason for v in swapped] == [None, "duplicate_near"]
    # switches
    assert [v.reason for v in find_duplicates(records, None, PERM, SEED)][2:4] == ["duplicate_exact", None]
    assert [v.reason for v in find_duplicates(records, 0.85, PERM, SEED, exact=False)][2:4] == [
        "duplicate_near", "duplicate_near"]


def test_different_files_are_not_near_duplicates():
    texts = [(STDLIB / n).read_text() for n in ("heapq.py", "bisect.py", "textwrap.py", "shlex.py", "glob.py")]
    verdicts = find_duplicates([_record(t) for t in texts], 0.85, PERM, SEED)
    assert all(v.reason is None for v in verdicts)
    a, b = (minhash_values(t, PERM, NGRAM, SEED) for t in texts[:2])
    assert np.mean(a == b) < 0.2


def test_signature_step_adds_hash_and_minhash():
    from datatrove.data import Document

    (d,) = DedupSignature(PERM, NGRAM, SEED).run(iter([Document(text=GOOD, id="a")]))
    assert d.metadata["hash"] == content_hash(GOOD)
    assert np.frombuffer(d.metadata["minhash"], dtype=np.uint32).shape == (PERM,)


# --- distributed dedup: the executor stages take find_duplicates's decisions ----------

def _variant(text: str, *words: tuple[int, str]) -> str:
    """`text` with its k-th words (\\w+) replaced."""
    import re

    spans = [m.span() for m in re.finditer(r"\w+", text)]
    for k, w in sorted(words, reverse=True):
        a, b = spans[k]
        text = text[:a] + w + text[b:]
    return text


def _hand_made() -> list[str]:
    """Documents in global order: copies, near copies, a chain A~B~C with A !~ C, no-word
    files, unrelated files."""
    a = (STDLIB / "heapq.py").read_text()[:1500]  # 242 words
    b = _variant(a, (20, "zb0"), (60, "zb1"))  # MinHash estimates: A~B 0.92, B~C 0.88, A~C 0.82
    c = _variant(b, (40, "zc0"), (80, "zc1"))
    other = (STDLIB / "textwrap.py").read_text()[:2500]
    return [a, other, b, a + "   \n", c, _variant(other, (50, "qqx")), "+-*/", "+-*/  \n", GOOD, c, "# --\n"]


def _dedup_on_executor(tmp_path, texts, cfg) -> list[tuple]:
    """Write `texts` (in global order) as the kept files of 2 ranks (rank = i % 2, each
    file's rows backwards: not in global order), run the dedup stages on cfg's executor;
    the verdicts (position, reason, position of the kept one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phi1.ingest.dedup import run_dedup

    work = tmp_path / "work"
    for rank in (0, 1):
        mine = [i for i in range(len(texts)) if i % 2 == rank][::-1]
        (work / "kept").mkdir(parents=True, exist_ok=True)
        (work / "order").mkdir(exist_ok=True)
        recs = [_record_cfg(texts[i], cfg) for i in mine]
        pq.write_table(pa.table({"hash": [h for h, _ in recs], "minhash": pa.array([m for _, m in recs], pa.binary())}),
                       work / "kept" / f"{rank:05d}.parquet")
        np.save(work / "order" / f"{rank:05d}.npy", np.array(mine, dtype=np.int64))
    run_dedup(cfg, work)
    v = pq.read_table(work / "verdicts.parquet").to_pylist()
    return [(r["pos"], r["reason"], r["dup_of"]) for r in v]


def _record_cfg(text, cfg):
    values = minhash_values(text, cfg.minhash_num_perm, cfg.minhash_ngram, cfg.seed)
    return content_hash(text), values.tobytes() if values is not None else b""


def _single_pass(texts_in_order, cfg) -> list[tuple]:
    verdicts = find_duplicates([_record_cfg(t, cfg) for t in texts_in_order], cfg.minhash_threshold,
                               cfg.minhash_num_perm, cfg.seed, exact=cfg.dedup_exact)
    return [(i, v.reason, v.duplicate_of) for i, v in enumerate(verdicts) if v.reason]


@pytest.mark.parametrize("exact,threshold", [(True, 0.85), (False, 0.85), (True, None)])
def test_distributed_stages_equal_the_single_pass(tmp_path, exact, threshold):
    from phi1.config import IngestConfig

    cfg = IngestConfig(tasks=2, workers=1, dedup_exact=exact, minhash_threshold=threshold)
    texts = _hand_made()
    got = _dedup_on_executor(tmp_path, texts, cfg)
    assert got == _single_pass(texts, cfg)
    if exact and threshold:  # what the documents were made for
        assert got == [(2, "duplicate_near", 0), (3, "duplicate_exact", 0), (5, "duplicate_near", 1),
                       (7, "duplicate_exact", 6), (9, "duplicate_exact", 4)]
        # 4 (C) is near 2 (B) only, and B is gone: C stays (first-kept order, not union-find clusters)
        a, b, c = (minhash_values(texts[i], PERM, NGRAM, SEED) for i in (0, 2, 4))
        assert np.mean(b == c) >= 0.85 > np.mean(a == c)


@pytest.mark.cluster
def test_distributed_stages_on_slurm(slurm, tmp_path):
    """The three dedup stages as real Slurm job arrays (the `slurm` fixture of
    tests/ingest/conftest.py) take the single pass's decisions."""
    from phi1.config import IngestConfig, SlurmExecutorConfig

    from tests.slurm_cluster import PARTITION

    cfg = IngestConfig(tasks=2, workers=2, executor="slurm", minhash_num_perm=32,
                       slurm=SlurmExecutorConfig(partition=PARTITION, job_name="phi1-test-dedup", poll_seconds=0.5,
                                                 mem_per_cpu_gb=1))
    texts = _hand_made()
    got = _dedup_on_executor(tmp_path, texts, cfg)
    assert got == _single_pass(texts, cfg)
    assert {r for _, r, _ in got} == {"duplicate_exact", "duplicate_near"}
    logs = tmp_path / "work"
    for stage, tasks in (("exact", 2), ("buckets", 2), ("cluster", 1)):  # each ran as its own Slurm job
        assert len(list((logs / f"logs-dedup-{stage}" / "slurm_logs").glob("*.out"))) == tasks
