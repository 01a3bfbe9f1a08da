"""The LLM backends: a real local HTTP server plays the OpenAI-compatible endpoint, a tiny
randomly initialised Phi model plays the local HF model."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from phi1.config import SynthesizeConfig
from phi1.errors import Phi1Error
from phi1.io import read_table
from phi1.synthesize.stage import run
from phi1.synthesize.exercise import Exercise
from phi1.synthesize.generate import (
    TransformersGenerator,
    exercise_messages,
    parse_exercise,
    parse_textbook,
    textbook_messages,
)
from phi1.synthesize.lists import Request

REQ = Request(index=0, seed=5, topic="recursion", audience="high school students", function_name="count_down")


def test_prompts_carry_the_draws():
    t = textbook_messages(REQ)[-1]["content"]
    e = exercise_messages(REQ)[-1]["content"]
    assert "recursion" in t and "high school students" in t
    assert "`count_down`" in e and "recursion" in e and "doctest" in e


def test_parse_answers():
    good = "Here you go:\n```python\ndef count_down(n: int) -> list:\n    \"\"\"Count down.\n\n    >>> count_down(2)\n    [2, 1]\n    \"\"\"\n    out = []\n    while n:\n        out.append(n)\n        n -= 1\n    return out\n```\n"
    ex = parse_exercise(good, "count_down")
    assert isinstance(ex, Exercise) and ex.tests == "assert count_down(2) == [2, 1]"
    assert parse_exercise(good, "other_name") == "wrong_function_name"
    assert parse_exercise("", "f") == "empty_response"
    assert parse_exercise("```python\ndef f(:\n```", "f") == "unparsable"
    assert parse_textbook("# T\n\nText.\n\n```python\nx = 1\n```\n").startswith("# T")
    assert parse_textbook("just prose") == "no_code"
    assert parse_textbook("```python\nfor\n```") == "code_unparsable"
    assert parse_textbook(None) == "empty_response"


def _answer(body: dict) -> str:
    """What the fake model writes: valid material, except on purpose for some seeds."""
    user = body["messages"][-1]["content"]
    seed = body["seed"]
    m = re.search(r"named `(\w+)`", user)
    if m is None:  # a textbook request
        topic = re.search(r"topic: (.*)\.\n", user).group(1)
        if seed % 4 == 0:
            return f"# {topic}\n\nOnly words, no code."
        return f"# {topic}\n\nA variable names a value.\n\n```python\nvalue = {seed}\nprint(value)\n```\n"
    name = m.group(1)
    want = 3 if seed % 2 else 4  # about half of the exercises carry a wrong example
    return (
        f"```python\ndef {name}(a: int, b: int) -> int:\n"
        f'    """Add two numbers ({seed}).\n\n    >>> {name}(1, 2)\n    {want}\n    """\n'
        "    total = a + b\n    return total\n```\n"
    )


class FakeLLM:
    """OpenAI-compatible /v1/chat/completions on 127.0.0.1, counting requests; `fail_after`
    makes it refuse (HTTP 400) every request after that many."""

    def __init__(self):
        self.requests = 0
        self.fail_after = None
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    llm.requests += 1
                    refuse = llm.fail_after is not None and llm.requests > llm.fail_after
                if self.path != "/v1/chat/completions" or refuse:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b'{"error": "refused"}')
                    return
                out = json.dumps({"choices": [{"message": {"role": "assistant", "content": _answer(body)}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_llm():
    llm = FakeLLM()
    yield llm
    llm.close()


@pytest.mark.slow
def test_openai_backend_checks_caches_and_resumes(workdir, filtered, fake_llm):
    cfg = SynthesizeConfig(backend="openai", base_url=fake_llm.url, model="fake", n_textbook=8, n_exercises=9,
                           cache_path=str(workdir / "cache"), concurrency=4, seed=3)
    # First attempt dies after 10 answers: the run fails with a one-line error, writes nothing...
    fake_llm.fail_after = 10
    with pytest.raises(Phi1Error, match="refused the request: HTTP 400"):
        run(cfg, filtered, workdir / "tb", workdir / "ex", workdir / "m.json", progress=False)
    assert not (workdir / "tb").exists()
    # ...and the rerun only asks for what the cache lacks.
    fake_llm.fail_after = None
    before = fake_llm.requests
    metrics = run(cfg, filtered, workdir / "tb", workdir / "ex", workdir / "m.json", progress=False)
    assert fake_llm.requests - before == 17 - 10
    ex = read_table(workdir / "ex").to_pylist()
    tb = read_table(workdir / "tb").to_pylist()
    dropped = metrics["exercises"]["dropped"]
    assert dropped.get("examples_failed", 0) >= 1 and len(ex) + dropped["examples_failed"] == 9
    assert all(r["backend"] == "openai" and r["model"] == "fake" and r["source_id"] is None for r in ex)
    assert all(f"def {r['function_name']}(" in r["prompt"] for r in ex)
    assert len(tb) + metrics["textbook"]["dropped"].get("no_code", 0) == 8 and len(tb) >= 1
    assert len({r["seed"] for r in ex}) == len(ex)
    # A third run is served from the cache alone.
    before = fake_llm.requests
    run(cfg, filtered, workdir / "tb", workdir / "ex", workdir / "m.json", progress=False)
    assert fake_llm.requests == before


def test_unreachable_endpoint_is_a_one_line_error(workdir, filtered):
    cfg = SynthesizeConfig(backend="openai", base_url="http://127.0.0.1:9/v1", n_textbook=1, n_exercises=0,
                           cache_path=str(workdir / "cache"), max_retries=0)
    with pytest.raises(Phi1Error, match="unreachable at http://127.0.0.1:9/v1"):
        run(cfg, filtered, workdir / "tb", workdir / "ex", workdir / "m.json", progress=False)


def _tiny_model(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([m["content"] for m in textbook_messages(REQ) + exercise_messages(REQ)] * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    fast.save_pretrained(path)
    cfg = PhiConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=1024, eos_token_id=fast.eos_token_id,
                    pad_token_id=fast.pad_token_id, bos_token_id=fast.eos_token_id)
    PhiForCausalLM(cfg).save_pretrained(path)


def test_transformers_backend_generates_batched_and_reproducibly(tmp_path):
    _tiny_model(tmp_path / "lm")
    cfg = SynthesizeConfig(backend="transformers", model_dir=str(tmp_path / "lm"), batch_size=2, max_new_tokens=8,
                           temperature=0.7)
    gen = TransformersGenerator(cfg, progress=False)
    batch = [textbook_messages(REQ), exercise_messages(REQ), textbook_messages(REQ)]
    out = gen.generate(batch, seeds=[1, 2, 3])
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
    assert gen.generate(batch, seeds=[1, 2, 3]) == out  # seeded sampling
    assert gen.model == str(tmp_path / "lm")


@pytest.mark.slow
def test_transformers_stage_counts_what_a_random_model_gets_wrong(workdir, filtered, tmp_path):
    _tiny_model(tmp_path / "lm")
    cfg = SynthesizeConfig(backend="transformers", model_dir=str(tmp_path / "lm"), n_textbook=2, n_exercises=2,
                           batch_size=2, max_new_tokens=8)
    metrics = run(cfg, filtered, workdir / "tb", workdir / "ex", workdir / "m.json", progress=False)
    # A random 2-layer model writes no fenced code and no function of the right name.
    assert metrics["textbook"]["n"] + sum(metrics["textbook"]["dropped"].values()) == 2
    assert metrics["exercises"]["n"] + sum(metrics["exercises"]["dropped"].values()) == 2
    assert metrics["model"] == str(tmp_path / "lm") and metrics["backend"] == "transformers"


def test_transformers_backend_needs_a_model_dir(tmp_path):
    from phi1.config import ConfigError

    with pytest.raises(ConfigError, match="model_dir"):
        SynthesizeConfig(backend="transformers")
    with pytest.raises(Phi1Error, match="synthesize.model_dir: .* is not a Hugging Face model folder"):
        TransformersGenerator(SynthesizeConfig(backend="transformers", model_dir=str(tmp_path)))
