"""13-gram overlap on normalised text, scored per benchmark task.

    index = NGramIndex(["def add(x, y): ...", ...], n=13)
    index.scores("some training text")      # {task index: share of its n-grams found}

Normalisation: lower-case, split into \\w+ words (punctuation, operators and layout
vanish), so `x+1` and `x + 1` agree. A task's score is the fraction of its distinct
n-grams that occur in the training text: 1.0 when the whole task is in there, and a
single common 13-word phrase in a long task scores low, which is what kept phi-1's own
13-gram check (its four HumanEval hits were common phrases) from over-flagging. Tasks
with fewer than n words have no n-grams and never score.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngram_hashes(text: str, n: int) -> set[int]:
    w = words(text)
    return {hash(tuple(w[i : i + n])) for i in range(len(w) - n + 1)}


class NGramIndex:
    """n-gram hash -> the reference tasks holding it."""

    def __init__(self, texts: Sequence[str], n: int = 13) -> None:
        self.n = n
        self.sizes: list[int] = []
        self.index: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            grams = ngram_hashes(text, n)
            self.sizes.append(len(grams))
            for g in grams:
                self.index.setdefault(g, []).append(i)

    def scores(self, text: str) -> dict[int, float]:
        """Reference index -> share of its n-grams in `text`, for references sharing any."""
        hits: Counter = Counter()
        for g in ngram_hashes(text, self.n):
            refs = self.index.get(g)
            if refs:
                hits.update(refs)
        return {r: c / self.sizes[r] for r, c in hits.items()}


__all__ = ["NGramIndex", "words", "ngram_hashes"]
