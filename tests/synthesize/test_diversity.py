import itertools

import numpy as np

from phi1.synthesize.diversity import mean_pairwise_similarity, near_duplicate_rate


def test_near_duplicate_rate_counts_items_with_a_near_twin():
    base = "def add(a, b):\n    return a + b  # adds two numbers together and returns the sum of them\n"
    texts = [base, base.replace("sum", "total"), "import os\nprint(os.getcwd()) # where we are right now in the tree", "x = [i * i for i in range(10)] and something else entirely"]
    assert near_duplicate_rate(texts, threshold=0.5) == 0.5
    assert near_duplicate_rate(texts[2:], threshold=0.5) == 0.0
    assert near_duplicate_rate([base]) == 0.0


def test_mean_pairwise_similarity_matches_brute_force():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 5))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    brute = np.mean([v[i] @ v[j] for i, j in itertools.permutations(range(7), 2)])
    assert abs(mean_pairwise_similarity(v) - brute) < 1e-9
    assert mean_pairwise_similarity(v[:1]) is None
    assert abs(mean_pairwise_similarity(np.vstack([v[0], v[0]])) - 1.0) < 1e-9
