import ast

import numpy as np

from phi1.io import iter_rows
from phi1.synthesize import extractive as ex
from phi1.engines.markdown import python_blocks
from phi1.synthesize.lists import Lists


def test_mine_finds_self_contained_documented_functions(filtered):
    mined = ex.mine(iter_rows(filtered))
    names = {it.exercise.function_name for it in mined.exercises}
    assert {"count_vowels", "hypotenuse", "most_common_word", "wrong_double"} <= names
    assert "uses_global" not in names and "_private_helper" not in names
    assert mined.dropped["not_self_contained"] >= 1 and mined.dropped["private"] >= 1
    assert mined.functions_seen >= len(mined.exercises) + sum(mined.dropped.values())
    assert all(it.summary.startswith(it.exercise.function_name + ": ") for it in mined.exercises)
    paths = {s.path for s in mined.sections}
    assert "helpers.py" in paths and "heapq.py" in paths  # documented modules become sections


def test_section_text_is_docs_with_parsable_code_blocks(filtered):
    mined = ex.mine(iter_rows(filtered))
    sec = next(s for s in mined.sections if s.path == "helpers.py")
    text, blocks = ex.section_text(sec, "string manipulation", "high school students", max_functions=2)
    assert text.startswith("# String manipulation\n\n*For high school students. Extracted from `helpers.py`")
    assert blocks == 2 and len(python_blocks(text)) == 2
    for code in python_blocks(text):
        tree = ast.parse(code)
        assert ast.get_docstring(tree.body[0]) is None  # the docstring is the prose, not repeated
    skip = {(sec.source_id, "count_vowels")}
    text2, _ = ex.section_text(sec, "t", "a", max_functions=10, exclude=skip)
    assert "def count_vowels" not in text2 and "def hypotenuse" in text2


def test_assign_balances_topics_uses_items_once_and_is_seeded():
    lists = Lists(topics=("sorting", "strings", "math"), audiences=("kids", "adults"),
                  function_names=("sort_list", "count_words", "add_numbers"))
    names = ["sort_list", "bubble", "count_words", "split_words", "add_numbers", "sum_all", "sort_list"]
    topic_of = np.array([0, 0, 1, 1, 2, 2, 0])
    close = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    picks, unserved = ex.assign("exercise", names, topic_of, close, lists, n=10, seed=3, max_per_name=1)
    chosen = [i for _, i in picks]
    assert len(chosen) == len(set(chosen)) == 6  # the second sort_list hits the name cap
    assert unserved["corpus_exhausted"] == 4
    for req, i in picks:
        assert req.topic == lists.topics[topic_of[i]] and req.function_name == names[i]
        assert req.audience in lists.audiences
    again, _ = ex.assign("exercise", names, topic_of, close, lists, n=10, seed=3, max_per_name=1)
    assert again == picks
