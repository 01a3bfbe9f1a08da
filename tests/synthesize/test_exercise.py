import ast

import pytest

from phi1.synthesize.exercise import doctest_asserts, exercise_from_source, parses
from phi1.engines.markdown import python_blocks
from tests.synthesize.conftest import EXTRA


def test_function_becomes_prompt_solution_and_tests():
    ex = exercise_from_source(EXTRA, "count_vowels")
    assert ex.function_name == "count_vowels"
    assert ex.prompt.startswith("def count_vowels(text):\n")
    assert ex.prompt.rstrip().endswith('"""')
    assert ex.solution.splitlines()[0] == '    vowels = set("aeiouAEIOU")'
    assert ex.tests.splitlines() == ["assert count_vowels('Hello World') == 3", "assert count_vowels('') == 0"]
    assert parses(ex.program)
    namespace: dict = {}
    exec(compile(ex.program, "<exercise>", "exec"), namespace)  # our own fixture code: runs and passes
    assert namespace["count_vowels"]("aeiou") == 5


def test_prompt_carries_only_the_imports_the_function_uses():
    ex = exercise_from_source(EXTRA, "hypotenuse")
    assert ex.prompt.startswith("import math\n\n\ndef hypotenuse(a, b):")
    assert "Counter" not in ex.prompt
    ex2 = exercise_from_source(EXTRA, "most_common_word")
    assert ex2.prompt.startswith("from collections import Counter\n")
    assert ex2.tests == ""  # no examples, no tests


def test_a_comment_after_the_docstring_is_not_in_the_prompt():
    """great_expectations writes `\"\"\"  # noqa: E501`: the prompt still ends at the quotes
    (the exercises suite expects it), also after non-ASCII text on that line."""
    src = 'def halve(x):\n    """Half of x, e.g. ½."""  # noqa: E501 # FIXME\n    return x / 2\n'
    ex = exercise_from_source(src, "halve")
    assert ex.prompt == 'def halve(x):\n    """Half of x, e.g. ½."""\n'
    assert ex.solution == "    return x / 2\n" and parses(ex.program)


@pytest.mark.parametrize(
    "name, reason",
    [("uses_global", "not_self_contained"), ("nope", "wrong_function_name")],
)
def test_functions_that_cannot_be_exercises_give_a_reason(name, reason):
    assert exercise_from_source(EXTRA, name) == reason


def test_reasons_for_bad_sources():
    assert exercise_from_source("def f(:\n", "f") == "unparsable"
    assert exercise_from_source("def f(x):\n    return x\n", "f") == "no_docstring"
    assert exercise_from_source('def f(x):\n    """Doc."""\n', "f") == "empty_body"
    assert exercise_from_source('def f(x):\n    """Doc."""\n    return x\n', "f", min_body_lines=2) == "too_short"
    src = 'import functools\n\n@functools.cache\ndef f(x):\n    """Doc."""\n    return x\n'
    assert exercise_from_source(src, "f") == "decorated"


def test_doctest_translation_covers_values_reprs_exceptions_and_statements():
    doc = """
    >>> x = [3, 1, 2]
    >>> sorted(x)  # a comment
    [1, 2, 3]
    >>> a or b
    (1, 2)
    >>> Fraction(3, 4)
    Fraction(3, 4)
    >>> int('x')
    Traceback (most recent call last):
      ...
    ValueError: invalid literal
    >>> -1
    -1
    """
    lines = doctest_asserts(doc)
    assert "x = [3, 1, 2]" in lines
    assert "assert sorted(x) == [1, 2, 3]" in lines
    assert "assert (a or b) == (1, 2)" in lines
    assert "assert repr(Fraction(3, 4)) == 'Fraction(3, 4)'" in lines
    assert "assert type(_exc).__name__ == 'ValueError'" in lines
    assert "assert (-1) == (-1)" in lines
    ast.parse(lines)


@pytest.mark.parametrize(
    "doc",
    [
        ">>> print(1)\n1\n",  # printed output is not a value
        ">>> for i in range(2):\n...     print(i)\n0\n1\n",
        ">>> f()  # doctest: +ELLIPSIS\n[1, ...]\n",
    ],
)
def test_untranslatable_examples(doc):
    assert doctest_asserts(doc) is None


def test_skipped_examples_are_left_out():
    assert doctest_asserts(">>> f()  # doctest: +SKIP\n3\n>>> 1 + 1\n2\n") == "assert (1 + 1) == 2"


def test_python_blocks():
    text = "Intro\n\n```python\nx = 1\n```\n\nmore\n\n```py\ny = 2\n```\n```text\nnot code\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]
