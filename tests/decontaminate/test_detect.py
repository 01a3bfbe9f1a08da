import numpy as np

from phi1.decontaminate.astmatch import match_rate
from phi1.decontaminate.detect import AstStats, ast_pairs, embedding_pairs, ngram_pairs
from phi1.decontaminate.ngram import NGramIndex
from phi1.decontaminate.references import load_references
from phi1.decontaminate.units import extract_units
from tests.decontaminate.conftest import disguise


def _units(small_corpus, extra: list[str]):
    rows = [{"content": (small_corpus / name).read_text()} for name in ("bisect.py", "colorsys.py")]
    rows += [{"content": c} for c in extra]
    return extract_units("filtered", rows, want_source=False, workers=1)


def test_prefilters_are_lossless_against_brute_force(small_corpus):
    refs = load_references(("humaneval",))[:16]
    planted = [p + s for p, s, _ in (disguise(r.text, r.entry_point) for r in refs[:5])]
    units = _units(small_corpus, planted)
    floor = 0.8
    stats = AstStats()
    got = {(u, j): s for u, j, s in ast_pairs(units, refs, floor, progress=False, stats=stats)}
    brute = {}
    for u, unit in enumerate(units):
        for j, ref in enumerate(refs):
            rate = match_rate(unit.tree, ref.tree)
            if rate >= floor:
                brute[(u, j)] = rate
    assert got.keys() == brute.keys() and all(abs(got[k] - brute[k]) < 1e-9 for k in got)
    assert stats.pairs == len(units) * len(refs)
    assert stats.after_labels < stats.after_size < stats.pairs  # the bounds do cut
    assert stats.ted_computed + stats.identical <= stats.after_labels
    # Without prefilters, the same answer from every pair.
    plain = AstStats()
    assert {(u, j) for u, j, _ in ast_pairs(units[-4:], refs, floor, use_bounds=False, progress=False, stats=plain)} == \
        {(u - (len(units) - 4), j) for (u, j) in brute if u >= len(units) - 4}
    assert plain.ted_computed + plain.identical == plain.pairs


def test_min_nodes_keeps_only_identical_tiny_trees():
    refs = load_references(("humaneval",))
    strlen = next(r for r in refs if r.task_id == "HumanEval/23")  # return len(string)
    rows = [{"content": "def size(s):\n    return len(s)\n"}, {"content": "def size(self):\n    return len(self.items)\n"}]
    units = extract_units("filtered", rows, want_source=False)
    hits = ast_pairs(units, [strlen], 0.8, min_nodes=16, progress=False)
    assert hits == [(0, 0, 1.0)]
    assert len(ast_pairs(units, [strlen], 0.8, min_nodes=1, progress=False)) == 2


def test_embedding_pairs_and_top_k_mask():
    ref = np.eye(3, dtype=np.float32)
    units = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    pairs, mask = embedding_pairs(units, ref, floor=0.75, top_k=1)
    assert sorted((u, r) for u, r, _ in pairs) == [(0, 0), (1, 1), (2, 2)]
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    assert embedding_pairs(units, ref, floor=0.5)[1] is None


def test_ngram_pairs_score_the_share_of_a_task_found():
    task = " ".join(f"w{i}" for i in range(30))
    index = NGramIndex([task, "too short to have any"], n=13)
    half = " ".join(f"w{i}" for i in range(15, 30))
    scores = index.scores("prefix " + half)
    assert set(scores) == {0} and abs(scores[0] - 3 / 18) < 1e-9
    assert index.scores(task.upper().replace(" ", " , ")) == {0: 1.0}  # case and punctuation do not matter
    assert ngram_pairs([task, half, "nothing"], index, floor=0.9) == [(0, 0, 1.0)]
