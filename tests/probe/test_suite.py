"""The shipped probe suite: enough probes per library, well-formed, parseable."""

from __future__ import annotations

import ast
from collections import Counter

import pytest

from phi1.errors import Phi1Error
from phi1.probe.suite import load_suite


def test_the_suite_has_at_least_ten_pygame_and_ten_tkinter_probes_with_unique_ids():
    probes = load_suite()
    counts = Counter(p.library for p in probes)
    assert len(probes) >= 24 and counts["pygame"] >= 10 and counts["tkinter"] >= 10
    assert len({p.id for p in probes}) == len(probes)
    assert all(p.id.startswith(p.library + "/") for p in probes)


def test_every_prompt_is_a_documented_function_its_reference_completes():
    for p in load_suite():
        tree = ast.parse(p.prompt + p.reference)
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert len(funcs) == 1 and ast.get_docstring(funcs[0]), p.id
        ast.parse(p.program(p.reference))


def test_libraries_filter_the_suite():
    assert {p.library for p in load_suite(libraries=("tkinter",))} == {"tkinter"}


def test_a_malformed_suite_file_names_its_line(tmp_path):
    bad = tmp_path / "probes.jsonl"
    bad.write_text('{"id": "x", "library": "pygame", "prompt": "", "reference": "", "check": ""}\n{"id": 1}\n')
    with pytest.raises(Phi1Error, match=r"probes.jsonl line 2: not a probe"):
        load_suite(bad)
