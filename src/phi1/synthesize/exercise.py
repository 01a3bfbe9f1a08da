"""Turn a documented Python function into a CodeExercise, and its docstring examples into tests.

    ex = exercise_from_source(module_source, "mean")      # Exercise or a drop reason (str)
    ex.prompt    # the imports it needs + signature + docstring (what the model is shown)
    ex.solution  # the body after the docstring (what the model must write)
    ex.tests     # `assert` lines translated from the docstring's doctest examples ('' if none)

Pure code, no I/O: both the extractive miner and the LLM backends come through here, so an
exercise has one shape whatever made it. A function is kept only when it stands alone: every
global name it reads is a builtin, the function itself, or bound by an absolute import of its
module (which the prompt then carries). Drop reasons are stable snake_case strings.
"""

from __future__ import annotations

import ast
import builtins
import doctest
import symtable
import textwrap
from dataclasses import dataclass

BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class Exercise:
    function_name: str
    prompt: str
    solution: str
    tests: str

    @property
    def program(self) -> str:
        """What the sandbox runs: the function, then its example asserts."""
        return f"{self.prompt}{self.solution}\n\n{self.tests}\n" if self.tests else f"{self.prompt}{self.solution}\n"


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


def find_function(tree: ast.Module, name: str | None) -> ast.FunctionDef | None:
    """The top-level function `name` (the last top-level function when name is None)."""
    found = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and (name is None or node.name == name):
            found = node
    return found


def import_bindings(tree: ast.Module) -> dict[str, str]:
    """Name -> the one-line absolute import statement that binds it, for top-level imports."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                out[bound] = f"import {a.name} as {a.asname}" if a.asname else f"import {a.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                if a.name == "*":
                    continue
                bound = a.asname or a.name
                alias = f" as {a.asname}" if a.asname else ""
                out[bound] = f"from {node.module} import {a.name}{alias}"
    return out


def global_names(func_source: str) -> set[str] | None:
    """Every name the function (and anything nested in it) reads as a global; None if it
    does not compile on its own (e.g. `nonlocal` of an outer scope)."""
    try:
        top = symtable.symtable(func_source, "<exercise>", "exec")
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        for sym in table.get_symbols():
            if sym.is_global() and sym.is_referenced():
                names.add(sym.get_name())
        stack.extend(table.get_children())
    return names


def exercise_from_source(source: str, name: str | None = None, tree: ast.Module | None = None,
                         min_body_lines: int = 1, max_body_lines: int = 10_000) -> Exercise | str:
    """The exercise made of top-level function `name` of a module, or the reason it cannot be one."""
    if tree is None:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return "unparsable"
    func = find_function(tree, name)
    if func is None:
        return "no_function" if name is None else "wrong_function_name"
    return exercise_from_function(source, tree, func, min_body_lines, max_body_lines)


def exercise_from_function(source: str, tree: ast.Module, func: ast.FunctionDef,
                           min_body_lines: int = 1, max_body_lines: int = 10_000) -> Exercise | str:
    if func.decorator_list:
        return "decorated"
    doc = ast.get_docstring(func)
    if not doc or not doc.strip():
        return "no_docstring"
    lines = source.splitlines()
    doc_node = func.body[0]
    if len(func.body) < 2 or doc_node.end_lineno is None or func.end_lineno is None:
        return "empty_body"
    if func.body[1].lineno <= doc_node.end_lineno or doc_node.lineno <= func.lineno:
        return "one_line_layout"  # `def f(): "doc"; return 1`: no line to split at
    head = lines[func.lineno - 1 : doc_node.end_lineno]
    # The prompt ends at the docstring's closing quotes: a comment after them on the same
    # line (`"""  # noqa: E501`) is not part of the exercise (offsets count UTF-8 bytes).
    head[-1] = head[-1].encode()[: doc_node.end_col_offset].decode(errors="ignore").rstrip()
    body = lines[doc_node.end_lineno : func.end_lineno]
    while body and not body[-1].strip():
        body.pop()
    code_lines = [ln for ln in body if ln.strip() and not ln.strip().startswith("#")]
    if len(code_lines) < min_body_lines:
        return "too_short"
    if len(code_lines) > max_body_lines:
        return "too_long"
    if len(code_lines) == 1 and code_lines[0].strip() in ("pass", "...", "raise NotImplementedError"):
        return "empty_body"
    func_src = "\n".join(head + body) + "\n"
    needed = global_names(func_src)
    if needed is None:
        return "unparsable"
    imports = import_bindings(tree)
    missing = sorted(n for n in needed if n not in BUILTIN_NAMES and n != func.name and n not in imports)
    if missing:
        return "not_self_contained"
    import_lines = sorted({imports[n] for n in needed if n in imports and n not in BUILTIN_NAMES})
    prompt = ("\n".join(import_lines) + "\n\n\n" if import_lines else "") + "\n".join(head) + "\n"
    solution = "\n".join(body) + "\n"
    if not parses(prompt + solution):
        return "unparsable"
    tests = doctest_asserts(doc, func.name)
    if tests is None:
        return "examples_untranslatable"
    return Exercise(function_name=func.name, prompt=prompt, solution=solution, tests=tests)


def doctest_asserts(docstring: str, name: str = "") -> str | None:
    """The docstring's doctest examples as plain Python asserts ('' when it has none), or
    None when an example has no faithful translation (print output, ELLIPSIS, ...).

    Doctest compares printed reprs: an example `>>> f(2)` / `4` becomes `assert f(2) == 4`
    when the expected text is a Python literal, else `assert repr(f(2)) == '<text>'`; an
    expected traceback becomes a check that the named exception is raised."""
    try:
        examples = doctest.DocTestParser().get_examples(docstring, name)
    except ValueError:  # inconsistent indentation inside the docstring
        return None
    out: list[str] = []
    for ex in examples:
        if ex.options.get(doctest.SKIP):
            continue
        if ex.options:
            return None  # ELLIPSIS, NORMALIZE_WHITESPACE, ...: not a plain equality
        src = ex.source.rstrip("\n")
        want = ex.want.rstrip("\n")
        if not parses(src):
            return None
        if ex.exc_msg is not None:
            exc_name = ex.exc_msg.split(":", 1)[0].strip().rsplit(".", 1)[-1]
            if not exc_name.isidentifier():
                return None
            out.append(
                "try:\n" + textwrap.indent(src, "    ") + "\n"
                "except Exception as _exc:\n"
                f"    assert type(_exc).__name__ == {exc_name!r}, type(_exc).__name__\n"
                "else:\n"
                f"    raise AssertionError('expected {exc_name}')"
            )
            continue
        if not want:
            out.append(src)
            continue
        try:
            expr = ast.parse(src, mode="eval")
        except SyntaxError:
            return None  # a statement with output (a print in a loop, ...)
        if isinstance(expr.body, ast.Call) and isinstance(expr.body.func, ast.Name) and expr.body.func.id == "print":
            return None
        # Unparsed, so comments and line breaks inside the example cannot break the assert.
        got = _operand(expr.body)
        try:
            expected = ast.parse(want.strip(), mode="eval").body
            ast.literal_eval(expected)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            expected = None
        if expected is not None:
            out.append(f"assert {got} == {_operand(expected)}")
        else:
            out.append(f"assert repr({ast.unparse(expr.body)}) == {want!r}")
    return "\n".join(out)


_PRIMARY = (ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.List, ast.Tuple,
            ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _operand(node: ast.expr) -> str:
    """Source of an expression, parenthesised unless it binds tighter than `==`."""
    text = ast.unparse(node)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex)) and text.startswith("-"):
        return f"({text})"
    return text if isinstance(node, _PRIMARY) else f"({text})"


__all__ = [
    "Exercise",
    "parses",
    "find_function",
    "import_bindings",
    "global_names",
    "exercise_from_source",
    "exercise_from_function",
    "doctest_asserts",
]
