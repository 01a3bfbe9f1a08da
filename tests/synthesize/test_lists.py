import pytest

from phi1.errors import Phi1Error
from phi1.synthesize.lists import default_list_path, draw_requests, load_list, load_lists


def test_packaged_lists_ship_and_cover_the_basics():
    lists = load_lists(None, None, None)
    assert len(lists.topics) >= 50 and len(lists.audiences) >= 10 and len(lists.function_names) >= 200
    for must in ("sorting algorithms", "string manipulation", "hash tables and dictionaries", "recursion"):
        assert must in lists.topics
    assert all(n.isidentifier() for n in lists.function_names)
    # Package data: found through importlib.resources inside the phi1 package.
    assert default_list_path("topics").parts[-3:] == ("synthesize", "data", "topics.txt")


def test_custom_list_skips_comments_blanks_and_repeats(tmp_path):
    p = tmp_path / "topics.txt"
    p.write_text("# my topics\n\nqueues\nqueues\n  graphs  \n")
    assert load_list(p, "topics") == ("queues", "graphs")


@pytest.mark.parametrize("content, message", [("# only a comment\n", "is empty"), ("good_name\nbad name\n", "not a Python identifier")])
def test_bad_lists_are_one_line_errors(tmp_path, content, message):
    p = tmp_path / "function_names.txt"
    p.write_text(content)
    with pytest.raises(Phi1Error, match=message):
        load_list(p, "function_names")
    with pytest.raises(Phi1Error, match="not found: .*missing.txt"):
        load_list(tmp_path / "missing.txt", "topics")


def test_requests_are_seeded_per_index_and_respect_the_name_cap():
    lists = load_lists(None, None, None)
    a, left = draw_requests("exercise", 30, lists, seed=7)
    b, _ = draw_requests("exercise", 40, lists, seed=7)
    assert left == 0 and a == b[:30]  # request i does not depend on how many are drawn
    c, _ = draw_requests("exercise", 30, lists, seed=8)
    assert [r.topic for r in a] != [r.topic for r in c]
    assert len({r.function_name for r in a}) == 30  # max_per_name=1
    assert len({r.topic for r in a}) > 10 and len({r.audience for r in a}) > 5
    many, unserved = draw_requests("exercise", len(lists.function_names) + 5, lists, seed=7, max_per_name=1)
    assert len(many) == len(lists.function_names) and unserved == 5
    text, _ = draw_requests("textbook", 3, lists, seed=7)
    assert all(r.function_name is None for r in text)
