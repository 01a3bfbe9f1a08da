"""Generation with a tiny real PhiForCausalLM folder (built in conftest)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from phi1.cli import app
from phi1.errors import Phi1Error
from phi1.engines import benchmarks
from phi1.engines.benchmarks import STOP_SEQUENCES
from phi1.engines.generation import complete, context_length, fit_to_context, generate, load_model


@pytest.fixture(scope="module")
def lm(tiny_model):
    return load_model(tiny_model, device="cpu")


def test_greedy_is_deterministic_and_independent_of_batching(lm):
    tasks = benchmarks.load("humaneval", limit=3)
    batched = generate(lm, tasks, max_new_tokens=12, batch_size=3)
    assert [s["task_id"] for s in batched] == [t.task_id for t in tasks]
    assert batched == generate(lm, tasks, max_new_tokens=12, batch_size=3)
    # Left padding: a prompt batched with longer ones decodes as it does alone.
    assert batched == generate(lm, tasks, max_new_tokens=12, batch_size=1)
    for s in batched:
        assert isinstance(s["completion"], str)
        assert not any(stop in s["completion"] for stop in STOP_SEQUENCES["humaneval"])


def test_sampling_gives_n_seeded_samples_per_task(lm):
    tasks = benchmarks.load("mbpp", limit=2)
    samples = generate(lm, tasks, n_samples=3, temperature=1.0, top_p=0.95, max_new_tokens=8, batch_size=4, seed=7)
    assert [s["task_id"] for s in samples] == ["Mbpp/11"] * 3 + ["Mbpp/12"] * 3
    assert len({s["completion"] for s in samples[:3]}) > 1  # random weights: samples differ
    assert samples == generate(lm, tasks, n_samples=3, temperature=1.0, top_p=0.95, max_new_tokens=8, batch_size=4, seed=7)
    with pytest.raises(Phi1Error, match="needs a temperature > 0"):
        generate(lm, tasks, n_samples=2, temperature=0.0)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(Phi1Error, match="not a Hugging Face model folder"):
        load_model(tmp_path)


def test_cli_generate_then_execute(tiny_model, tmp_path):
    runner = CliRunner()
    samples = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["evaluate", "generate", "--model", str(tiny_model), "--benchmark", "mbpp",
                                 "--out", str(samples), "--limit", "3", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"benchmark": "mbpp", "model": str(tiny_model), "n_tasks": 3,
                                         "n_samples": 3, "out": str(samples)}
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["Mbpp/11", "Mbpp/12", "Mbpp/13"]
    results = tmp_path / "r.jsonl"
    result = runner.invoke(app, ["evaluate", "execute", "--benchmark", "mbpp", "--samples", str(samples),
                                 "--out", str(results), "--allow-partial", "--k", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # A random 2-layer model solves nothing; what matters is that every sample got a verdict.
    assert summary["n_tasks"] == 3 and summary["pass@1"] == 0.0 and sum(summary["statuses"].values()) == 3
    assert all(not json.loads(line)["passed"] for line in results.read_text().splitlines())


def test_fit_to_context_keeps_the_prompt_end_and_caps_only_what_cannot_fit():
    assert fit_to_context([10, 40], 16, 128) == (112, 16)  # fits: nothing changes
    assert fit_to_context([300, 5], 16, 128) == (112, 16)  # cut to the last 112 tokens
    assert fit_to_context([300], 1000, 128) == (64, 64)  # the prompt keeps half; max_new_tokens capped
    assert fit_to_context([30], 1000, 128) == (64, 98)  # a short prompt: capped to what is left
    assert fit_to_context([300], 16, None) == (300, 16)  # no declared context: untouched


def test_prompts_longer_than_the_context_are_cut_from_the_left_and_counted(tiny_model):
    lm = load_model(tiny_model, device="cpu")
    lm.model.config.max_position_embeddings = 128  # a short context (rotary: any length runs), fast to fill
    tok = lm.tokenizer
    ctx = context_length(lm.model.config)
    long = "x = 1\n" * ctx
    ids = tok(long)["input_ids"]
    assert len(ids) > ctx
    lm.fit.take()
    texts = complete(lm, [long, "def add(a, b):"], max_new_tokens=16)
    assert lm.fit.take() == {"prompts_truncated": 1, "max_new_tokens_capped": 0}
    # The long prompt continues as its last ctx - 16 tokens do alone: its end was kept.
    tail = tok.decode(ids[-(ctx - 16):])
    assert tok(tail)["input_ids"] == ids[-(ctx - 16):]
    assert complete(lm, [tail], max_new_tokens=16) == texts[:1]
    assert lm.fit.take() == {"prompts_truncated": 0, "max_new_tokens_capped": 0}
    # More new tokens than the context holds: the prompt keeps half, the rest is generated.
    complete(lm, [long], max_new_tokens=ctx + 1)
    assert lm.fit.take() == {"prompts_truncated": 1, "max_new_tokens_capped": 1}
