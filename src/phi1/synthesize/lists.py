"""The diversity lists (topics, audiences, function names) and the seeded request draws.

    topics = load_list(None, "topics")              # packaged phi1/synthesize/data/topics.txt
    reqs = draw_requests("exercise", 100, lists, seed=1234, max_per_name=1)

phi-1 made its synthetic data diverse by putting a randomly drawn topic and target
audience into every generation prompt, and for exercises a function name. Each request
gets its own seed (stored with the record), derived from the stage seed and the request's
index, so record i is the same whatever the batch size or concurrency.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from phi1.errors import Phi1Error

LIST_NAMES = ("topics", "audiences", "function_names")


@dataclass(frozen=True)
class Lists:
    topics: tuple[str, ...]
    audiences: tuple[str, ...]
    function_names: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One generation request: what to write about, for whom, and (exercises) the name."""

    index: int
    seed: int
    topic: str
    audience: str
    function_name: Optional[str] = None


def default_list_path(name: str) -> Path:
    return Path(str(resources.files("phi1.synthesize") / "data" / f"{name}.txt"))


def load_list(path: str | Path | None, name: str) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a list file (the packaged default when path is None),
    deduplicated in order; a missing or empty file is a Phi1Error naming it."""
    p = Path(path) if path is not None else default_list_path(name)
    if not p.is_file():
        raise Phi1Error(f"synthesize {name} list not found: {p}")
    items: list[str] = []
    for line in p.read_text(encoding="utf-8").splitlines():
        item = line.strip()
        if item and not item.startswith("#") and item not in items:
            items.append(item)
    if not items:
        raise Phi1Error(f"synthesize {name} list is empty: {p}")
    if name == "function_names":
        bad = next((i for i in items if not i.isidentifier()), None)
        if bad is not None:
            raise Phi1Error(f"{p}: {bad!r} is not a Python identifier")
    return tuple(items)


def load_lists(topics_file: str | None, audiences_file: str | None, function_names_file: str | None) -> Lists:
    return Lists(
        topics=load_list(topics_file, "topics"),
        audiences=load_list(audiences_file, "audiences"),
        function_names=load_list(function_names_file, "function_names"),
    )


def request_seed(seed: int, kind: str, index: int) -> int:
    """A 31-bit seed for request `index` of `kind`, stable across runs and platforms."""
    digest = hashlib.sha256(f"{seed}:{kind}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def draw_requests(kind: str, n: int, lists: Lists, seed: int, max_per_name: int = 1) -> tuple[list[Request], int]:
    """`n` requests of kind `textbook` or `exercise`, and how many could not be drawn because
    every function name already reached `max_per_name` uses."""
    out: list[Request] = []
    uses: dict[str, int] = {}
    for i in range(n):
        s = request_seed(seed, kind, i)
        rng = random.Random(s)
        topic, audience = rng.choice(lists.topics), rng.choice(lists.audiences)
        name = None
        if kind == "exercise":
            free = [x for x in lists.function_names if uses.get(x, 0) < max_per_name]
            if not free:
                return out, n - i
            name = rng.choice(free)
            uses[name] = uses.get(name, 0) + 1
        out.append(Request(index=i, seed=s, topic=topic, audience=audience, function_name=name))
    return out, 0


__all__ = ["Lists", "Request", "LIST_NAMES", "load_list", "load_lists", "default_list_path",
           "request_seed", "draw_requests"]
