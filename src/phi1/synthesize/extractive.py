"""The `extractive` generator: offline, deterministic, and no language model involved.

    mined = mine(rows)                                   # from data/codetextbook/filtered
    picks = assign(mined.exercises, topic_vectors, item_vectors, lists, n, seed)

What it is, plainly: exercises are real top-level functions with docstrings taken from the
filtered corpus and cut into CodeExercises form (imports + signature + docstring as the
prompt, the body as the solution, doctest examples as asserts); textbook sections are real
module docstrings followed by the module's documented functions, each docstring as prose
and its code (docstring removed) as a ```python block. Nothing is paraphrased or invented.

Diversity controls work as for the LLM backends, by draws: every item is assigned its
nearest topic (embedding cosine of topic text vs. name + docstring summary); each request
draws a topic among those with unused items, an audience and, for exercises, a function
name; the request takes the unused item of that topic whose name shares the most words
with the drawn name (ties: closest to the topic). The audience is recorded and stated in
the section's lead line; the extracted text itself does not change with it.
"""

from __future__ import annotations

import ast
import random
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from phi1.synthesize.exercise import Exercise, exercise_from_function, parses
from phi1.synthesize.lists import Lists, Request, request_seed

MODEL = "extractive-v1"
MAX_SECTION_FUNCTION_LINES = 40
MAX_MODULE_DOC_CHARS = 1500


@dataclass
class ExerciseItem:
    source_id: str
    path: str
    exercise: Exercise
    summary: str
    """Name and first docstring paragraph: the text matched against topics."""


@dataclass
class SectionItem:
    source_id: str
    path: str
    module_doc: str
    functions: list[tuple[str, str, str, int]]
    """(qualified name, docstring, code without docstring, top-level function line) in file order."""
    summary: str


@dataclass
class Mined:
    exercises: list[ExerciseItem] = field(default_factory=list)
    sections: list[SectionItem] = field(default_factory=list)
    functions_seen: int = 0
    dropped: Counter = field(default_factory=Counter)
    """Mined functions that cannot be exercises, per reason."""


def first_paragraph(doc: str, limit: int = 300) -> str:
    para = doc.strip().split("\n\n", 1)[0]
    return " ".join(para.split())[:limit]


def name_words(name: str) -> set[str]:
    return {w for w in re.split(r"[_\W]+", name.lower()) if w}


def mine(rows: Iterable[dict[str, Any]], min_body_lines: int = 2, max_body_lines: int = 60) -> Mined:
    """Candidate exercises (self-contained documented top-level functions) and textbook
    sections (documented modules) from rows with `id`, `path` and `content`."""
    out = Mined()
    seen_solutions: set[str] = set()
    for row in rows:
        src = row["content"]
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError):
            continue  # filter only keeps parsable files; a row that is not is simply skipped
        for node in tree.body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            out.functions_seen += 1
            if isinstance(node, ast.AsyncFunctionDef):
                out.dropped["async"] += 1
                continue
            if node.name.startswith("_"):
                out.dropped["private"] += 1
                continue
            if node.name.startswith("test"):
                out.dropped["test_function"] += 1
                continue
            ex = exercise_from_function(src, tree, node, min_body_lines, max_body_lines)
            if isinstance(ex, str):
                out.dropped[ex] += 1
                continue
            key = " ".join((ex.prompt + ex.solution).split())
            if key in seen_solutions:
                out.dropped["duplicate"] += 1
                continue
            seen_solutions.add(key)
            doc = ast.get_docstring(node) or ""
            out.exercises.append(ExerciseItem(row["id"], row.get("path", ""), ex, f"{ex.function_name}: {first_paragraph(doc)}"))
        section = _section_item(row, src, tree)
        if section is not None:
            out.sections.append(section)
    return out


def _section_item(row: dict[str, Any], src: str, tree: ast.Module) -> SectionItem | None:
    doc = ast.get_docstring(tree)
    if not doc or len(doc.strip()) < 40:
        return None
    lines = src.splitlines()
    functions: list[tuple[str, str, str, int]] = []

    def visit(body, prefix: str, top_line: int | None):
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{prefix}{node.name}.", node.lineno)
            elif isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                fdoc = ast.get_docstring(node)
                code = _code_without_docstring(lines, node)
                if fdoc and code and code.count("\n") < MAX_SECTION_FUNCTION_LINES and parses(code):
                    functions.append((prefix + node.name, fdoc, code, top_line or node.lineno))

    visit(tree.body, "", None)
    if not functions:
        return None
    path = row.get("path", "")
    return SectionItem(row["id"], path, doc, functions, f"{path}: {first_paragraph(doc)}")


def _code_without_docstring(lines: list[str], func: ast.FunctionDef) -> str | None:
    if len(func.body) < 2 or func.end_lineno is None:
        return None
    doc = func.body[0]
    if doc.lineno <= func.lineno or func.body[1].lineno <= (doc.end_lineno or 0):
        return None
    start = func.decorator_list[0].lineno if func.decorator_list else func.lineno
    head = lines[start - 1 : doc.lineno - 1]
    body = lines[doc.end_lineno : func.end_lineno]
    return textwrap.dedent("\n".join(head + body)).strip("\n") + "\n"


def nearest_topics(topic_vecs: np.ndarray, item_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each item's nearest topic and the cosine to it (unit vectors in)."""
    if len(item_vecs) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    sims = item_vecs @ topic_vecs.T  # (items, topics)
    best = sims.argmax(axis=1)
    return best, sims[np.arange(len(best)), best]


def assign(kind: str, names: Sequence[str], topic_of: np.ndarray, closeness: np.ndarray, lists: Lists,
           n: int, seed: int, max_per_name: int | None = None) -> tuple[list[tuple[Request, int]], Counter]:
    """Up to `n` (request, item index) pairs: each request draws a topic that still has
    unused items, an audience and (exercises) a function name, and takes the best unused
    item of that topic. Returns the pairs and the count of requests left unserved."""
    pools: dict[int, list[int]] = {}
    for i in sorted(range(len(topic_of)), key=lambda i: (-float(closeness[i]), i)):
        pools.setdefault(int(topic_of[i]), []).append(i)
    uses: Counter = Counter()
    out: list[tuple[Request, int]] = []
    unserved: Counter = Counter()
    for index in range(n):
        # Drop items whose name is used up; then topics with nothing left.
        for t in list(pools):
            pools[t] = [i for i in pools[t] if max_per_name is None or uses[names[i]] < max_per_name]
            if not pools[t]:
                del pools[t]
        if not pools:
            unserved["corpus_exhausted"] = n - index
            break
        s = request_seed(seed, kind, index)
        rng = random.Random(s)
        t = rng.choice(sorted(pools))
        audience = rng.choice(lists.audiences)
        hint = rng.choice(lists.function_names) if kind == "exercise" else None
        pool = pools[t]
        pick = pool[0]
        if hint is not None:
            want = name_words(hint)
            # max() keeps the first best, i.e. the one closest to the topic among equals.
            pick = max(pool, key=lambda i: len(want & name_words(names[i])))
        pool.remove(pick)
        uses[names[pick]] += 1
        out.append((Request(index, s, lists.topics[t], audience, names[pick] if kind == "exercise" else None), pick))
    return out, unserved


def section_text(item: SectionItem, topic: str, audience: str, max_functions: int,
                 exclude: set[tuple[str, str]] = frozenset()) -> tuple[str, int]:
    """The markdown of a textbook section, and how many code blocks it holds."""
    doc = item.module_doc.strip()
    if len(doc) > MAX_MODULE_DOC_CHARS:
        cut = doc.rfind("\n\n", 0, MAX_MODULE_DOC_CHARS)
        doc = doc[: cut if cut > 0 else MAX_MODULE_DOC_CHARS].rstrip()
    parts = [
        f"# {topic[:1].upper()}{topic[1:]}",
        f"*For {audience}. Extracted from `{item.path}`: its documentation, with the code it describes.*",
        doc,
    ]
    blocks = 0
    for qualname, fdoc, code, _ in item.functions:
        if (item.source_id, qualname) in exclude:
            continue
        parts.append(f"## `{qualname}`")
        parts.append(fdoc.strip())
        parts.append(f"```python\n{code}```")
        blocks += 1
        if blocks >= max_functions:
            break
    return "\n\n".join(parts) + "\n", blocks


__all__ = ["MODEL", "ExerciseItem", "SectionItem", "Mined", "mine", "nearest_topics", "assign",
           "section_text", "first_paragraph", "name_words"]
