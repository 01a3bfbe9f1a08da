from phi1.synthesize.checks import run_examples
from phi1.synthesize.exercise import exercise_from_source
from tests.synthesize.conftest import EXTRA


def test_examples_run_in_the_sandbox_and_wrong_ones_fail():
    good = exercise_from_source(EXTRA, "count_vowels").program
    wrong = exercise_from_source(EXTRA, "wrong_double").program
    hang = "def f():\n    while True:\n        pass\n\nf()\n"
    assert run_examples([good, wrong, hang], timeout=2.0, memory_bytes=256 << 20, workers=2, progress=False) == [
        "passed", "failed", "timeout"]
    assert run_examples([], timeout=1.0, memory_bytes=1 << 28) == []
