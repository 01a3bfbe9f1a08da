"""Solution loss with a real tiny Phi model: against a hand computation in torch, the
prompt/solution masking, truncation, and a model trained on the solutions scoring lower."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from phi1.errors import Phi1Error
from phi1.engines import benchmarks
from phi1.engines.generation import load_model
from phi1.engines.solution_loss import encode, fit, reference, solution_loss
from tests.engines.conftest import build_tiny_model


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(build_tiny_model(tmp_path_factory.mktemp("sl") / "tiny", seed=3), device="cpu")


def _tasks():
    return benchmarks.load("humaneval")[:3] + benchmarks.load("mbpp", "test")[:3]


def _by_hand(model, ids: list[int], n_ctx: int) -> tuple[float, int]:
    """Sum of -log p(token | everything before it) over ids[n_ctx:], one unpadded sequence."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0].double(), dim=-1)  # (T, V)
    return -sum(logp[j - 1, ids[j]].item() for j in range(n_ctx, len(ids))), len(ids) - n_ctx


def test_loss_equals_a_hand_computation_per_task_and_overall(lm):
    tasks = _tasks()
    result = solution_loss(lm, tasks, batch_size=4)  # batches of unequal lengths: padding in play
    sums, counts = [], []
    for task, row in zip(tasks, result.per_task):
        ids, n_ctx, _ = encode(lm.tokenizer, task.prompt, reference(task))
        total, n = _by_hand(lm.model, ids, n_ctx)
        assert row["task_id"] == task.task_id and row["tokens"] == n and not row["truncated"]
        assert row["loss"] == pytest.approx(total / n, rel=1e-4)
        sums.append(total)
        counts.append(n)
    assert result.tokens == sum(counts) and result.tasks == 6 and result.truncated == 0
    assert result.loss == pytest.approx(sum(sums) / sum(counts), rel=1e-4)  # token-weighted
    assert result.task_mean == pytest.approx(sum(s / n for s, n in zip(sums, counts)) / 6, rel=1e-4)
    # An untrained model is near uniform over its vocabulary.
    assert result.loss == pytest.approx(math.log(lm.model.config.vocab_size), abs=0.5)
    # The batch size changes nothing.
    one = solution_loss(lm, tasks, batch_size=1)
    assert [r["loss"] for r in one.per_task] == pytest.approx([r["loss"] for r in result.per_task], rel=1e-4)
    assert result.metrics() == {
        "solution_loss": result.loss, "solution_loss_task_mean": result.task_mean, "solution_tokens": result.tokens,
        "solution_tasks": 6, "solution_truncated": 0, "solution_split_boundary": result.split_boundary,
    }


def test_only_solution_tokens_count_whatever_the_prompt_ends_with(lm):
    tok = lm.tokenizer
    for task in benchmarks.load("humaneval") + benchmarks.load("mbpp", "test"):
        solution = reference(task)
        ids, n_ctx, _ = encode(tok, task.prompt, solution)
        assert tok.decode(ids[:n_ctx]) == task.prompt and tok.decode(ids[n_ctx:]) == solution
        for last in ("x", " ", ")"):  # another last prompt token: the same scored tokens
            ids2, n2, _ = encode(tok, task.prompt[:-1] + last, solution)
            assert ids2[n2:] == ids[n_ctx:]
    # ... and at the model: the same tokens are scored, under another context.
    task = benchmarks.load("humaneval")[0]
    other = benchmarks.Task(**{**task.__dict__, "prompt": task.prompt[:-1] + "x"})
    a, b = solution_loss(lm, [task]), solution_loss(lm, [other])
    assert a.tokens == b.tokens and a.loss != b.loss


def test_the_joint_tokenization_is_used_when_the_prompt_is_a_prefix(lm):
    tok = lm.tokenizer
    prompt, solution = "def add(a, b):\n    return", " a + b\n"
    ids, n_ctx, split = encode(tok, prompt, solution)
    assert not split and ids == tok(prompt + solution)["input_ids"] and n_ctx == len(tok(prompt)["input_ids"])
    # HumanEval prompts end in a newline and bodies start with spaces: a merge crosses the
    # boundary, so the parts are tokenized apart, as generation sees them.
    task = benchmarks.load("humaneval")[0]
    ids, n_ctx, split = encode(tok, task.prompt, task.canonical_solution)
    assert split and ids[:n_ctx] == tok(task.prompt)["input_ids"]
    assert ids[n_ctx:] == tok(task.canonical_solution, add_special_tokens=False)["input_ids"]


def test_mbpp_reference_line_endings_are_unix():
    task = benchmarks.load("mbpp", "test")[0]
    assert "\r\n" in task.canonical_solution and "\r" not in reference(task)
    assert reference(task) == task.canonical_solution.replace("\r\n", "\n")


def test_fit_drops_prompt_from_the_left_then_the_solution_tail():
    ids = list(range(10))
    assert fit(ids, 6, 12) == (ids, 6, False)
    assert fit(ids, 6, 7) == ([3, 4, 5, 6, 7, 8, 9], 3, True)  # all 4 solution tokens kept
    assert fit(ids, 6, 4) == ([5, 6, 7, 8], 1, True)  # one context token, solution cut
    assert fit(ids, 0, 4) == ([0, 1, 2, 3], 0, True)


def test_sequences_past_the_context_are_truncated_and_counted(lm):
    tasks = _tasks()
    full = solution_loss(lm, tasks)
    lm.model.config.max_position_embeddings = 64
    try:
        cut = solution_loss(lm, tasks, batch_size=2)
    finally:
        lm.model.config.max_position_embeddings = 1024
    lengths = [len(encode(lm.tokenizer, t.prompt, reference(t))[0]) for t in tasks]
    assert cut.truncated == sum(n > 64 for n in lengths) > 0
    for task, row in zip(tasks, cut.per_task):
        ids, n_ctx, _ = encode(lm.tokenizer, task.prompt, reference(task))
        ids, n_ctx, was_cut = fit(ids, n_ctx, 64)
        total, n = _by_hand(lm.model, ids, n_ctx)
        assert row["truncated"] == was_cut and row["tokens"] == n
        assert row["loss"] == pytest.approx(total / n, rel=1e-4)
    assert cut.tokens <= full.tokens


def test_a_model_trained_on_the_solutions_scores_lower(lm):
    tasks = benchmarks.load("humaneval")[:2]
    before = solution_loss(lm, tasks)
    trained = dataclasses.replace(lm, model=copy.deepcopy(lm.model))  # the fixture's model stays untrained
    model = trained.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = [torch.tensor([encode(lm.tokenizer, t.prompt, t.canonical_solution)[0]]) for t in tasks]
    for _ in range(10):
        for x in batch:
            opt.zero_grad()
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
    model.eval()
    after = solution_loss(trained, tasks)
    assert after.tokens == before.tokens
    assert after.loss < before.loss - 1.0, (before.loss, after.loss)


def test_no_tasks_is_an_error(lm):
    with pytest.raises(Phi1Error, match="no tasks"):
        solution_loss(lm, [])
