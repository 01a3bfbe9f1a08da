"""Fixtures of the synthesize tests: a filtered dataset made of real code."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from phi1.io import write_shards

# A real module written for these tests: functions that make good exercises (with passing
# examples, with imports, without examples), one whose example is wrong, one that needs a
# module global, one private.
EXTRA = '''"""Small helpers for text and numbers, used by the synthesize tests."""

import math
from collections import Counter


def count_vowels(text):
    """Count the vowels in a text.

    >>> count_vowels("Hello World")
    3
    >>> count_vowels("")
    0
    """
    vowels = set("aeiouAEIOU")
    return sum(1 for ch in text if ch in vowels)


def hypotenuse(a, b):
    """Length of the hypotenuse of a right triangle with legs a and b.

    >>> hypotenuse(3, 4)
    5.0
    """
    squared = a * a + b * b
    return math.sqrt(squared)


def wrong_double(x):
    """Double a number (the example is wrong on purpose).

    >>> wrong_double(2)
    5
    """
    result = x * 2
    return result


def most_common_word(text):
    """The most frequent word of a text."""
    words = text.lower().split()
    return Counter(words).most_common(1)[0][0]


def uses_global(x):
    """Scale x by the module constant."""
    y = x * SCALE
    return y


def _private_helper(x):
    """Not an exercise."""
    y = x + 1
    return y


SCALE = 3
'''


def filtered_rows(corpus: Path) -> list[dict]:
    rows = []
    files = sorted(corpus.rglob("*.py"))
    texts = [(str(p.relative_to(corpus)), p.read_text(encoding="utf-8")) for p in files]
    texts.append(("helpers.py", EXTRA))
    for rel, content in texts:
        rows.append({
            "id": hashlib.sha1(f"stdlib\0{rel}".encode()).hexdigest()[:16],
            "source": "stdlib",
            "path": rel,
            "content": content,
            "quality_score": 0.9,
        })
    return rows


@pytest.fixture
def filtered(small_corpus, tmp_path) -> Path:
    """data/codetextbook/filtered-like dataset: the 20-file stdlib corpus plus EXTRA."""
    out = tmp_path / "filtered"
    out.mkdir()
    write_shards(out, filtered_rows(small_corpus))
    return out
