"""Fixtures of the decontaminate tests: benchmark solutions disguised as training items, and
unrelated real standard-library code."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import pytest

from phi1.io import write_shards
from phi1.synthesize.stage import EXERCISES_SCHEMA, TEXTBOOK_SCHEMA

_CHECK = re.compile(r"check\((\w+)\)\s*$")


def _id(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


class _Rename(ast.NodeTransformer):
    """Rename the parameters and local variables of every function, and the entry point;
    module-level helpers keep their names (a copy would have to call them)."""

    def __init__(self, names: set[str]):
        self.names = {n: f"v{i}" for i, n in enumerate(sorted(names))}

    def visit_arg(self, node):
        node.arg = self.names.get(node.arg, node.arg)
        return node

    def visit_Name(self, node):
        node.id = self.names.get(node.id, node.id)
        return node

    def visit_FunctionDef(self, node):
        node.name = self.names.get(node.name, node.name)
        self.generic_visit(node)
        return node


def disguise(code: str, entry: str) -> tuple[str, str, str]:
    """(prompt, solution, new entry name) of `code` with renamed variables, reformatted by
    ast.unparse (quotes, spacing, line breaks, comments all change), cut CodeExercises-style
    after the entry point's docstring."""
    tree = ast.parse(code)
    local: set[str] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for n in ast.walk(fn):
                if isinstance(n, ast.arg):
                    local.add(n.arg)
                elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                    local.add(n.id)
    new_entry = f"solve_{entry}"
    renamer = _Rename(local)
    renamer.names[entry] = new_entry
    text = ast.unparse(renamer.visit(tree)) + "\n"
    func = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == new_entry)
    first = func.body[0]
    cut = first.end_lineno if ast.get_docstring(func) is not None else first.lineno - 1
    lines = text.splitlines(keepends=True)
    return "".join(lines[:cut]), "".join(lines[cut:]), new_entry


def planted_humaneval() -> list[dict]:
    from phi1.engines.benchmarks import load

    rows = []
    for task in load("humaneval"):
        entry = _CHECK.search(task.test).group(1)
        prompt, solution, name = disguise(task.prefix + task.canonical_solution, entry)
        rows.append(exercise_row(prompt, solution, name, source_id=f"planted:{task.task_id}"))
    return rows


def exercise_row(prompt: str, solution: str, name: str, source_id: str, tests: str = "") -> dict:
    return {"id": _id(prompt, solution), "topic": "planted", "audience": "tests", "function_name": name,
            "seed": 0, "prompt": prompt, "solution": solution, "tests": tests, "source_id": source_id,
            "backend": "extractive", "model": "extractive-v1"}


def stdlib_exercises(corpus: Path) -> list[dict]:
    from phi1.synthesize.extractive import mine

    rows = [{"id": _id(str(p)), "path": p.name, "content": p.read_text()} for p in sorted(corpus.rglob("*.py"))]
    mined = mine(rows)
    return [exercise_row(it.exercise.prompt, it.exercise.solution, it.exercise.function_name, it.source_id,
                         it.exercise.tests) for it in mined.exercises]


def filtered_rows(corpus: Path) -> list[dict]:
    return [{"id": _id("f", str(p)), "path": str(p.relative_to(corpus)), "content": p.read_text(),
             "quality_score": 0.9} for p in sorted(corpus.rglob("*.py"))]


def textbook_rows(corpus: Path) -> list[dict]:
    from phi1.synthesize.extractive import mine, section_text

    mined = mine({"id": _id(str(p)), "path": p.name, "content": p.read_text()} for p in sorted(corpus.rglob("*.py")))
    out = []
    topics, audiences = ("sorting algorithms", "string manipulation", "recursion"), ("students", "teachers")
    for i, s in enumerate(mined.sections[:6]):
        topic, audience = topics[i % 3], audiences[i % 2]
        text, _ = section_text(s, topic, audience, max_functions=3)
        out.append({"id": _id("t", text), "topic": topic, "audience": audience, "seed": i,
                    "text": text, "source_ids": [s.source_id], "backend": "extractive", "model": "extractive-v1"})
    return out


def write(path: Path, rows: list[dict], schema=None) -> Path:
    path.mkdir(parents=True)
    write_shards(path, rows, schema=schema)
    return path


@pytest.fixture
def datasets(small_corpus, tmp_path):
    """filtered = the stdlib corpus; textbook = sections of it; exercises = the 164 disguised
    HumanEval solutions followed by the corpus's own functions as exercises."""
    planted = planted_humaneval()
    unrelated = stdlib_exercises(small_corpus)
    return {
        "filtered": write(tmp_path / "filtered", filtered_rows(small_corpus)),
        "textbook": write(tmp_path / "textbook", textbook_rows(small_corpus), TEXTBOOK_SCHEMA),
        "exercises": write(tmp_path / "exercises", planted + unrelated, EXERCISES_SCHEMA),
        "planted_ids": {r["id"] for r in planted},
        "unrelated_ids": {r["id"] for r in unrelated},
    }
