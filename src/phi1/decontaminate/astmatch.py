"""AST match rate: how alike two functions are as syntax trees, whatever their names or layout.

    a, b = normalise(func_a), normalise(func_b)     # ast.FunctionDef -> Tree
    match_rate(a, b)                                 # 1 - TED(a, b) / max(|a|, |b|), in [0, 1]

phi-1 measured contamination by the tree edit distance between the ASTs of a training
function and a benchmark solution. Here the trees are normalised first, so renaming
variables or reformatting code changes nothing: docstrings, comments, annotations and
expression contexts are dropped; names bound inside the function (parameters, locals,
loop and comprehension targets, the function's own name) become a bare `Name`, while
free names (builtins, modules, globals), attribute names, keyword names, operators and
short constants stay in the labels, so unrelated code of the same shape still differs.

TED is Zhang-Shasha with unit costs (zss's algorithm; zss.distance itself builds the list
of edit operations for every cell, ~100x slower, and is the oracle of the tests). Exact
distances are only needed for the pairs the cheap, lossless bounds let through:
  size:   TED >= |n1 - n2|                    so  rate <= min(n1, n2) / max(n1, n2)
  labels: TED >= max(n1, n2) - sum_l min(h1[l], h2[l])  (h: label counts; hashing labels
          into fewer buckets only loosens it), so rate <= common / max(n1, n2)
  order:  TED >= edit distance of the pre-order (and of the post-order) label sequences
          (Guha et al., SIGMOD 2002), banded, so it stops as soon as the band is exceeded.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field

import numpy as np

HIST_DIM = 256
"""Buckets of the hashed label histogram used by the label bound."""
MAX_CONST_CHARS = 24


@dataclass
class Tree:
    """A normalised tree in the arrays Zhang-Shasha needs (post-order numbering)."""

    labels: list[int]
    """Label id of each node, post-order."""
    lmd: list[int]
    """Left-most leaf descendant of each node, post-order index."""
    keyroots: list[int]
    pre: list[int] = field(default_factory=list)
    """Label ids in pre-order (for the sequence bound)."""
    digest: str = ""
    """Hash of the whole normalised tree: equal digests mean equal trees (rate 1)."""

    @property
    def size(self) -> int:
        return len(self.labels)

    def histogram(self, dim: int = HIST_DIM) -> np.ndarray:
        h = np.zeros(dim, dtype=np.int32)
        np.add.at(h, np.asarray(self.labels, dtype=np.int64) % dim, 1)
        return h


_LABEL_IDS: dict[str, int] = {}


def _label_id(label: str) -> int:
    # Stable across processes (not hash()), so histograms built anywhere agree.
    got = _LABEL_IDS.get(label)
    if got is None:
        got = int.from_bytes(hashlib.blake2b(label.encode(), digest_size=6).digest(), "big")
        _LABEL_IDS[label] = got
    return got


def _const_label(value) -> str:
    if isinstance(value, (bool, type(None), int, float, complex)):
        text = repr(value)
    elif isinstance(value, (str, bytes)):
        text = repr(value) if len(value) <= MAX_CONST_CHARS else f"<{type(value).__name__}>"
    else:
        text = f"<{type(value).__name__}>"
    return f"Constant:{text}"


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


# Fields never walked: annotations (a typed and an untyped copy of a function are the same
# code), comments-in-disguise, and the operator/context objects folded into the labels.
_SKIP_FIELDS = frozenset({"annotation", "returns", "type_comment", "ctx", "op", "ops", "type_params", "type_ignores"})
_FIELDS: dict[type, tuple[str, ...]] = {}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _children(node: ast.AST) -> list[ast.AST]:
    fields = _FIELDS.get(type(node))
    if fields is None:
        fields = _FIELDS[type(node)] = tuple(f for f in node._fields if f not in _SKIP_FIELDS)
    out: list[ast.AST] = []
    for name in fields:
        value = getattr(node, name, None)
        if isinstance(value, list):
            if name == "body" and isinstance(node, _SCOPES) and value and _is_docstring(value[0]):
                value = value[1:]
            out.extend(v for v in value if isinstance(v, ast.AST))
        elif isinstance(value, ast.AST):
            out.append(value)
    return out


_OP_NODES = (ast.BinOp, ast.AugAssign, ast.BoolOp, ast.UnaryOp)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _plain_label(node: ast.AST, t: type) -> str:
    if t is ast.Attribute:
        return f"Attribute:{node.attr}"
    if t is ast.Constant:
        return _const_label(node.value)
    if t in _OP_NODES:
        return f"{t.__name__}:{type(node.op).__name__}"
    if t is ast.Compare:
        return f"Compare:{'.'.join(type(o).__name__ for o in node.ops)}"
    if t is ast.keyword:
        return f"keyword:{node.arg}"
    if t is ast.ImportFrom:
        return f"ImportFrom:{node.module or ''}"
    if t is ast.alias:
        return f"alias:{node.name}"
    return t.__name__


def _binds(node: ast.AST, t: type) -> tuple[str, ...]:
    """Names a node binds in the function around it."""
    if t is ast.arg:
        return (node.arg,)
    if t in _SCOPES:
        return (node.name,)
    if t is ast.alias:
        return ((node.asname or node.name).split(".")[0],)
    if t is ast.ExceptHandler or t is ast.MatchAs or t is ast.MatchStar:
        return (node.name,) if node.name else ()
    if t is ast.Global or t is ast.Nonlocal:
        return tuple(node.names)
    if t is ast.MatchMapping:
        return (node.rest,) if node.rest else ()
    return ()


class _Scope:
    __slots__ = ("bound", "loads", "pre_first")

    def __init__(self, pre_first: int) -> None:
        self.bound: set[str] = set()
        self.loads: list[tuple[int, int, str]] = []  # (post index, pre index, name) to resolve
        self.pre_first = pre_first


_BARE_NAME = "Name"


def _walk(root: ast.AST) -> list[tuple[ast.AST, Tree]]:
    """One iterative walk labelling every node; returns each function with its tree.

    A loaded Name is bare when the function that reads it, or one around it, binds it
    anywhere (parameters, assignments, loop targets, imports, nested defs, its own name).
    Bindings are only known at the end of a function, so loads are resolved when it
    closes, and its tree is cut from the post-order then (a function's subtree is a
    contiguous run of it)."""
    labels: list[int] = []
    lmd: list[int] = []
    pre: list[int] = []
    out: list[tuple[ast.AST, Tree]] = []
    scopes: list[_Scope] = []
    leftmost: list[int] = []  # per open node: post-order index of its left-most leaf, -1 unknown
    bare = _label_id(_BARE_NAME)
    # Entries: (node, None) opens a node; (node, label id) closes it.
    stack: list[tuple[ast.AST, int | None]] = [(root, None)]
    while stack:
        node, lid = stack.pop()
        t = type(node)
        if lid is None:
            if scopes:
                names = _binds(node, t)
                if names:
                    # A def's name belongs to the scope around it and to itself (recursion).
                    scopes[-1].bound.update(names)
            if t in _FUNCS:
                scopes.append(_Scope(len(pre)))
                scopes[-1].bound.add(node.name)
            if t is ast.Name:
                if scopes and not isinstance(node.ctx, ast.Load):
                    scopes[-1].bound.add(node.id)
                lid = _label_id(f"Name:{node.id}")
                if scopes:
                    scopes[-1].loads.append((-1, len(pre), node.id))
            else:
                lid = _label_id(_plain_label(node, t))
            pre.append(lid)
            stack.append((node, lid))
            leftmost.append(-1)
            stack.extend((kid, None) for kid in reversed(_children(node)))
            continue
        idx = len(labels)
        leaf = leftmost.pop()
        if leaf == -1:
            leaf = idx  # no child closed before it: a leaf
        labels.append(lid)
        lmd.append(leaf)
        if leftmost and leftmost[-1] == -1:
            leftmost[-1] = leaf  # the first child to close gives its parent's left-most leaf
        if t is ast.Name and scopes:
            pidx = scopes[-1].loads[-1][1] if scopes[-1].loads and scopes[-1].loads[-1][0] == -1 else None
            if pidx is not None:
                scopes[-1].loads[-1] = (idx, pidx, node.id)
        if t in _FUNCS:
            scope = scopes.pop()
            unresolved = []
            for post_i, pre_i, name in scope.loads:
                if name in scope.bound:
                    labels[post_i] = pre[pre_i] = bare
                else:
                    unresolved.append((post_i, pre_i, name))
            sub_labels = labels[leaf : idx + 1]
            sub_lmd = [x - leaf for x in lmd[leaf : idx + 1]]
            sub_pre = pre[scope.pre_first : scope.pre_first + len(sub_labels)]
            digest = hashlib.sha1(repr((sub_labels, sub_lmd)).encode()).hexdigest()
            out.append((node, Tree(sub_labels, sub_lmd, _keyroots(sub_lmd), sub_pre, digest)))
            if scopes:
                scopes[-1].bound |= scope.bound
                scopes[-1].loads.extend(unresolved)
    return out


def normalise(func: ast.FunctionDef | ast.AsyncFunctionDef) -> Tree:
    """The normalised tree of a function (see the module docstring)."""
    return _walk(func)[-1][1]  # the outermost function closes last


def module_functions(tree: ast.Module) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, Tree]]:
    """Every function of a parsed module (nested ones too) with its normalised tree, in one walk."""
    out = _walk(tree)
    out.sort(key=lambda p: (p[0].lineno, p[0].col_offset))
    return out


def _keyroots(lmd: list[int]) -> list[int]:
    last: dict[int, int] = {}
    for i, leaf in enumerate(lmd):
        last[leaf] = i  # the highest node with this left-most leaf
    return sorted(last.values())


def ted(a: Tree, b: Tree) -> int:
    """Unit-cost tree edit distance (Zhang-Shasha)."""
    al, bl = a.labels, b.labels
    alm, blm = a.lmd, b.lmd
    n, m = len(al), len(bl)
    td = [[0] * m for _ in range(n)]
    for i in a.keyroots:
        li = alm[i]
        for j in b.keyroots:
            lj = blm[j]
            rows = i - li + 2
            cols = j - lj + 2
            fd = [[0] * cols for _ in range(rows)]
            for x in range(1, rows):
                fd[x][0] = x
            row0 = fd[0]
            for y in range(1, cols):
                row0[y] = y
            for x in range(1, rows):
                xi = x + li - 1
                lx = alm[xi]
                fx, fprev = fd[x], fd[x - 1]
                tdx = td[xi]
                lab = al[xi]
                if lx == li:
                    for y in range(1, cols):
                        yj = y + lj - 1
                        if blm[yj] == lj:
                            v = fprev[y - 1] + (lab != bl[yj])
                            d = fprev[y] + 1
                            if d < v:
                                v = d
                            d = fx[y - 1] + 1
                            if d < v:
                                v = d
                            fx[y] = v
                            tdx[yj] = v
                        else:
                            v = fd[lx - li][blm[yj] - lj] + tdx[yj]
                            d = fprev[y] + 1
                            if d < v:
                                v = d
                            d = fx[y - 1] + 1
                            if d < v:
                                v = d
                            fx[y] = v
                else:
                    fp = fd[lx - li]
                    for y in range(1, cols):
                        yj = y + lj - 1
                        v = fp[blm[yj] - lj] + tdx[yj]
                        d = fprev[y] + 1
                        if d < v:
                            v = d
                        d = fx[y - 1] + 1
                        if d < v:
                            v = d
                        fx[y] = v
    return td[n - 1][m - 1]


def match_rate(a: Tree, b: Tree) -> float:
    """1 - TED / max(size): 1 for equal normalised trees, 0 for nothing in common."""
    if a.digest == b.digest:
        return 1.0
    return 1.0 - ted(a, b) / max(a.size, b.size)


def sequence_bound(a: list[int], b: list[int], limit: int) -> int:
    """Edit distance of two label sequences if it is <= limit, else limit + 1 (banded DP)."""
    n, m = len(a), len(b)
    if abs(n - m) > limit:
        return limit + 1
    big = limit + 1
    prev = [j if j <= limit else big for j in range(m + 1)]
    for i in range(1, n + 1):
        lo, hi = max(1, i - limit), min(m, i + limit)
        cur = [big] * (m + 1)
        cur[0] = i if i <= limit else big
        ai = a[i - 1]
        best = cur[0]
        for j in range(lo, hi + 1):
            v = prev[j - 1] + (ai != b[j - 1])
            d = prev[j] + 1
            if d < v:
                v = d
            d = cur[j - 1] + 1
            if d < v:
                v = d
            cur[j] = v if v < big else big
            if v < best:
                best = v
        if best > limit:
            return big
        prev = cur
    return prev[m] if prev[m] <= limit else big


__all__ = ["Tree", "HIST_DIM", "normalise", "module_functions", "ted", "match_rate", "sequence_bound"]
