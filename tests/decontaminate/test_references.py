from phi1.decontaminate.references import load_references


def test_humaneval_and_the_mbpp_test_split():
    refs = load_references(("humaneval", "mbpp"))
    he = [r for r in refs if r.benchmark == "humaneval"]
    mbpp = [r for r in refs if r.benchmark == "mbpp"]
    assert len(he) == 164 and len(mbpp) == 500
    assert mbpp[0].task_id == "Mbpp/11" and mbpp[-1].task_id == "Mbpp/510"
    assert all(r.tree is not None for r in refs)
    first = he[0]
    assert first.entry_point == "has_close_elements" and "def has_close_elements" in first.text
    assert "distance = abs(elem - elem2)" in first.text  # the canonical solution is part of the text
    m11 = mbpp[0]
    assert m11.entry_point == "remove_Occ" and "first and last occurrence" in m11.text
