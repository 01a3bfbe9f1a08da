"""What gets compared: each dataset item's text (n-grams) and its functions (embedding, AST).

    texts = item_texts("textbook", rows)          # one string per item
    units = extract_units("textbook", rows, want_source=True, workers=2)

An item is a row of a dataset: a code file (`filtered`, column `content`), a textbook
section (`textbook`, its ```python blocks), or an exercise (`exercises`, prompt +
solution). Its units are every function definition in its code, nested ones included,
each with its normalised AST. Parsing and normalising is the slow part on a big corpus,
so it runs in `workers` processes.
"""

from __future__ import annotations

import ast
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from phi1.decontaminate.astmatch import Tree, module_functions
from phi1.engines.markdown import python_blocks

DATASETS = ("filtered", "textbook", "exercises", "raw")
COLUMNS = {"filtered": ["content"], "raw": ["content"], "textbook": ["text"], "exercises": ["prompt", "solution"]}


@dataclass
class Unit:
    item: int
    """Row index of the item in its dataset."""
    name: str
    lineno: int
    """Line of the `def` in the item's code (in its code block, for textbook sections)."""
    tree: Tree
    source: Optional[str] = None
    """The function's source, when it is to be embedded."""


def item_text(dataset: str, row: dict[str, Any]) -> str:
    if dataset in ("filtered", "raw"):
        return row["content"] or ""
    if dataset == "textbook":
        return row["text"] or ""
    return (row["prompt"] or "") + (row["solution"] or "")


def item_code(dataset: str, row: dict[str, Any]) -> list[str]:
    """The pieces of Python code of an item."""
    if dataset == "textbook":
        return python_blocks(row["text"] or "")
    return [item_text(dataset, row)]


def _units_of(job: tuple[int, list[str], bool]) -> list[Unit]:
    item, pieces, want_source = job
    out: list[Unit] = []
    for code in pieces:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue  # not Python (a prose block, a fragment): nothing for the AST detector
        for node, t in module_functions(tree):
            source = ast.get_source_segment(code, node) if want_source else None
            out.append(Unit(item, node.name, node.lineno, t, source))
    return out


def _chunk(jobs: list) -> list[Unit]:
    out: list[Unit] = []
    for job in jobs:
        out.extend(_units_of(job))
    return out


def extract_units(dataset: str, rows: Sequence[dict[str, Any]], want_source: bool, workers: int = 1,
                  chunk: int = 32) -> list[Unit]:
    """Every function of every item, in item order."""
    jobs = [(i, item_code(dataset, r), want_source) for i, r in enumerate(rows)]
    if workers <= 1 or len(jobs) <= chunk:
        return _chunk(jobs)
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_chunk, chunks))
    return [u for part in parts for u in part]


__all__ = ["Unit", "DATASETS", "COLUMNS", "item_text", "item_code", "extract_units"]
