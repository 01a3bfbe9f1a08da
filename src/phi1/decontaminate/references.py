"""The benchmark items training data is checked against: HumanEval and the MBPP test split.

    refs = load_references(("humaneval", "mbpp"))    # 164 + 500 Reference objects
    refs[0].task_id, refs[0].text, refs[0].tree       # 'HumanEval/0', prompt + solution, its AST

Tasks come from phi1.engines.benchmarks (the same loader the evaluation uses). For the
AST detector each task is reduced to its entry-point function: HumanEval's `entry_point`
(prompt + canonical solution), MBPP's function that the first test calls (reference
code). The n-gram and embedding detectors see the whole task text: HumanEval prompt +
solution; MBPP description + first test + reference code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from phi1.decontaminate.astmatch import Tree, module_functions

_CHECK = re.compile(r"check\((\w+)\)\s*$")


@dataclass(frozen=True)
class Reference:
    benchmark: str
    task_id: str
    text: str
    """Everything the task shows: compared by the n-gram and embedding detectors."""
    entry_point: Optional[str]
    tree: Optional[Tree]
    """Normalised AST of the entry-point function (None if it cannot be found)."""


def _mbpp_entry(test: str, code_tree: ast.Module) -> Optional[str]:
    defined = {n.name for n in ast.walk(code_tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    try:
        test_tree = ast.parse(test)
    except SyntaxError:
        return None
    for node in ast.walk(test_tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
            return node.func.id
    return None


def load_references(benchmarks: Sequence[str]) -> list[Reference]:
    """HumanEval (all 164) and/or the MBPP test split (task ids 11-510), in task order."""
    from phi1.engines.benchmarks import load

    out: list[Reference] = []
    for bench in benchmarks:
        for task in load(bench, split="test"):
            if bench == "humaneval":
                code = task.prefix + task.canonical_solution
                m = _CHECK.search(task.test)
                entry = m.group(1) if m else None
                text = code
            else:
                code = task.canonical_solution
                text = task.prompt + code
                entry = None
            try:
                tree = ast.parse(code)
            except SyntaxError:
                out.append(Reference(bench, task.task_id, text, entry, None))
                continue
            if bench == "mbpp":
                entry = _mbpp_entry(task.test, tree)
            funcs = module_functions(tree)
            chosen = [t for f, t in funcs if f.name == entry] or ([funcs[-1][1]] if funcs else [])
            out.append(Reference(bench, task.task_id, text, entry, chosen[-1] if chosen else None))
    return out


__all__ = ["Reference", "load_references"]
