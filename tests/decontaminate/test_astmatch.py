import ast
import random

import pytest
import zss

from phi1.decontaminate.astmatch import match_rate, module_functions, normalise, sequence_bound, ted
from phi1.engines.benchmarks import load
from tests.decontaminate.conftest import disguise


def _func(code: str, name: str | None = None):
    tree = ast.parse(code)
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and (name is None or n.name == name)][0]


def _zss_tree(t):
    """Rebuild a zss node tree from the post-order arrays."""
    nodes = [(t.labels[i], []) for i in range(t.size)]
    for i in range(t.size):
        j, kids = i - 1, []
        while j >= t.lmd[i]:
            kids.append(j)
            j = t.lmd[j] - 1
        nodes[i][1].extend(nodes[k] for k in reversed(kids))
    return nodes[-1]


def _humaneval_trees(n):
    out = []
    for task in load("humaneval")[:n]:
        out.append(normalise(_func(task.prefix + task.canonical_solution, task.test.split("check(")[-1].split(")")[0])))
    return out


def test_ted_equals_zss_on_real_solutions():
    trees = _humaneval_trees(12)
    rng = random.Random(0)
    for a, b in [(rng.choice(trees), rng.choice(trees)) for _ in range(12)]:
        want = zss.distance(_zss_tree(a), _zss_tree(b), lambda n: n[1], lambda n: 1, lambda n: 1,
                            lambda x, y: int(x[0] != y[0]))
        assert ted(a, b) == want


def test_renaming_and_reformatting_change_nothing():
    code = (
        "def mean_gap(values: list[float]) -> float:\n"
        '    """Mean distance between neighbours."""\n'
        "    # neighbours only\n"
        "    total = 0.0\n"
        "    for i in range(1, len(values)):\n"
        "        total += abs(values[i] - values[i-1])\n"
        "    return total / max(1, len(values) - 1)\n"
    )
    prompt, solution, name = disguise(code, "mean_gap")
    assert "values" not in solution and "total" not in solution and name == "solve_mean_gap"
    a, b = normalise(_func(code)), normalise(_func(prompt + solution))
    assert a.digest == b.digest and match_rate(a, b) == 1.0


def test_structure_constants_and_free_names_still_count():
    base = normalise(_func("def f(xs):\n    return sorted(xs)[0]\n"))
    other_call = normalise(_func("def f(xs):\n    return reversed(xs)[0]\n"))
    other_index = normalise(_func("def f(xs):\n    return sorted(xs)[1]\n"))
    assert ted(base, other_call) == 1 and ted(base, other_index) == 1
    assert match_rate(base, other_call) == pytest.approx(1 - 1 / base.size)
    unrelated = normalise(_func("def g(a, b):\n    while a:\n        a, b = b % a, a\n    return b\n"))
    assert match_rate(base, unrelated) < 0.5


def test_module_functions_include_nested_ones_in_source_order():
    code = "def outer(x):\n    def inner(y):\n        return y + x\n    return inner(x)\n\nclass C:\n    def m(self):\n        return 1\n"
    found = module_functions(ast.parse(code))
    assert [f.name for f, _ in found] == ["outer", "inner", "m"]
    outer_alone = normalise(_func(code, "outer"))
    assert found[0][1].digest == outer_alone.digest


def _levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_sequence_bounds_are_banded_edit_distances_below_ted():
    trees = _humaneval_trees(20)
    rng = random.Random(1)
    for a, b in [(rng.choice(trees), rng.choice(trees)) for _ in range(20)]:
        d = ted(a, b)
        for seq_a, seq_b in ((a.pre, b.pre), (a.labels, b.labels)):
            exact = _levenshtein(seq_a, seq_b)
            assert exact <= d  # Guha et al.: pre- and post-order edit distances bound TED from below
            assert sequence_bound(seq_a, seq_b, exact) == exact
            if exact:
                assert sequence_bound(seq_a, seq_b, exact - 1) == exact  # "more than the limit"


def test_deep_code_does_not_hit_the_recursion_limit():
    body = "x = " + "(" * 150 + "1" + ")" * 150
    nested = "def f():\n" + "".join("    " * (i + 1) + "if x:\n" for i in range(90)) + "    " * 91 + "pass\n"
    assert normalise(_func(nested)).size > 180
    assert normalise(_func(f"def g():\n    {body}\n    return x\n")).size > 3
