"""Exact and near-duplicate detection, and signatures that are stable across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

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
