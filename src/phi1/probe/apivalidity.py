"""API validity: do the library attribute chains a completion uses exist?

    api_chains(prompt, completion, "pygame")   # [("pygame.display.set_mode", True), ...]

The paper's base model writes plausible but wrong API calls (`pygame.display.setmode`);
this measures it statically, without running anything. The completion is parsed with
its prompt; every attribute chain in the completion whose root is a name bound to the
library is resolved attribute by attribute against the installed library:
- names bound by `import pygame`, `import tkinter as tk`, `from tkinter import ttk`,
  `from pygame.locals import *`-free forms (star imports are not followed);
- names typed by the library: parameters annotated with a library class
  (`root: tk.Tk`), and variables assigned from a call of a library class
  (`b = tk.Button(...)`) or of a factory whose result type is known (`_RETURNS`).
An attribute of an instance counts as valid when its class has it or it is one of the
instance attributes the class sets in `__init__` (`_INSTANCE_ATTRS`). Chains on other
names are not counted. Validity = valid chains / counted chains.
"""

from __future__ import annotations

import ast
import importlib
import os
from typing import Any, Optional

# Resolving pygame.* imports pygame, which otherwise greets on stdout (the CLI's JSON).
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

_MISSING = object()

# Factories whose result type the chain cannot show: dotted call -> dotted class.
_RETURNS = {
    "pygame.display.set_mode": "pygame.Surface",
    "pygame.display.get_surface": "pygame.Surface",
    "pygame.image.load": "pygame.Surface",
    "pygame.font.SysFont": "pygame.font.Font",
    "pygame.transform.scale": "pygame.Surface",
    "pygame.transform.smoothscale": "pygame.Surface",
    "pygame.transform.rotate": "pygame.Surface",
    "pygame.transform.flip": "pygame.Surface",
    "pygame.Surface.get_rect": "pygame.Rect",
    "pygame.Surface.copy": "pygame.Surface",
    "pygame.Surface.convert": "pygame.Surface",
    "pygame.Surface.convert_alpha": "pygame.Surface",
    "pygame.font.Font.render": "pygame.Surface",
    "pygame.event.Event": "pygame.event.EventType",
    "matplotlib.pyplot.figure": "matplotlib.figure.Figure",
    "matplotlib.pyplot.gca": "matplotlib.axes.Axes",
}
# Instance attributes set in __init__, so not on the class.
_INSTANCE_ATTRS = {
    "tkinter.Misc": {"master", "tk", "children", "widgetName", "_w", "_name"},
    "pygame.sprite.Sprite": {"image", "rect"},
}


def _resolve(dotted: str) -> Any:
    """The object named `a.b.c`, importing modules as needed; _MISSING if it does not exist."""
    parts = dotted.split(".")
    obj: Any = _MISSING
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:  # ImportError, or a module that fails to import here
            continue
        for name in parts[i:]:
            obj = getattr(obj, name, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _has(obj: Any, name: str, instance: bool) -> bool:
    if hasattr(obj, name):
        return True
    if instance and isinstance(obj, type):
        return any(name in _INSTANCE_ATTRS.get(_qualname(c), ()) for c in obj.__mro__)
    return False


def _chain(node: ast.AST) -> Optional[list[str]]:
    """`a.b.c` -> ["a", "b", "c"]; None when the root is not a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


class _Collector(ast.NodeVisitor):
    def __init__(self, library: str, first_line: int):
        self.library = library
        self.first_line = first_line
        self.names: dict[str, tuple[str, bool]] = {}  # local name -> (dotted target, is instance)
        self.chains: list[tuple[str, bool]] = []

    def _ours(self, dotted: str) -> bool:
        return dotted == self.library or dotted.startswith(self.library + ".")

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if self._ours(a.name):
                if a.asname:
                    self.names[a.asname] = (a.name, False)
                else:
                    root = a.name.split(".")[0]
                    self.names[root] = (root, False)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level and self._ours(node.module):
            for a in node.names:
                if a.name != "*":
                    self.names[a.asname or a.name] = (f"{node.module}.{a.name}", False)

    def _type_of(self, annotation: Optional[ast.AST]) -> Optional[str]:
        if annotation is None:
            return None
        parts = _chain(annotation)
        if not parts or parts[0] not in self.names:
            return None
        target, instance = self.names[parts[0]]
        if instance:
            return None
        dotted = ".".join([target, *parts[1:]])
        return dotted if isinstance(_resolve(dotted), type) else None

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            cls = self._type_of(arg.annotation)
            if cls:
                self.names[arg.arg] = (cls, True)
        self.generic_visit(node)

    def _call_type(self, value: ast.AST) -> Optional[str]:
        """The class of what a call returns, when we know it."""
        if not isinstance(value, ast.Call):
            return None
        dotted = self._dotted(value.func)
        if dotted is None:
            return None
        target, _ = dotted
        if target in _RETURNS:
            return _RETURNS[target]
        obj = _resolve(target)
        return _qualname(obj) if isinstance(obj, type) and _resolve(_qualname(obj)) is obj else (
            target if isinstance(obj, type) else None)

    def _dotted(self, node: ast.AST) -> Optional[tuple[str, bool]]:
        parts = _chain(node)
        if not parts or parts[0] not in self.names:
            return None
        target, instance = self.names[parts[0]]
        return ".".join([target, *parts[1:]]), instance

    def visit_Assign(self, node: ast.Assign) -> None:
        self.generic_visit(node)
        cls = self._call_type(node.value)
        for t in node.targets:
            if isinstance(t, ast.Name):
                if cls:
                    self.names[t.id] = (cls, True)
                elif t.id in self.names:
                    del self.names[t.id]  # rebound to something we cannot type

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _chain(node)
        if parts is None or parts[0] not in self.names:
            self.generic_visit(node)
            return
        if node.lineno >= self.first_line and not isinstance(node.ctx, ast.Store):
            target, instance = self.names[parts[0]]
            obj = _resolve(target)
            ok = obj is not _MISSING
            for i, name in enumerate(parts[1:]):
                if not ok:
                    break
                ok = _has(obj, name, instance and i == 0)
                obj = getattr(obj, name, _MISSING) if ok else _MISSING
                if ok and obj is _MISSING:  # an instance attribute: its type is unknown
                    break
            self.chains.append((".".join([target, *parts[1:]]) if not instance else
                                f"<{target}>." + ".".join(parts[1:]), ok))
        # the chain is one use: do not count its prefixes again


def api_chains(prompt: str, completion: str, library: str) -> Optional[list[tuple[str, bool]]]:
    """(chain, exists) for every library attribute chain in `completion`; None if the
    prompt + completion does not parse."""
    try:
        tree = ast.parse(prompt + completion)
    except SyntaxError:
        return None
    first_line = prompt.count("\n") + 1
    collector = _Collector(library, first_line)
    collector.visit(tree)
    return collector.chains
