"""`phi1 evaluate generate`: benchmark prompts -> a samples JSONL, with any local HF causal LM.

    phi1 evaluate generate --model checkpoints/phi1 --benchmark mbpp --out s.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from phi1.engines import benchmarks
from phi1.engines.generation import generate, load_model, write_samples
from phi1.engines.progress import progress_bar
from phi1.errors import Phi1Error


def generate_file(model_dir: str | Path, benchmark: str, out: str | Path, *, split: str = "test",
                  limit: Optional[int] = None, n_samples: int = 1, temperature: float = 0.0, top_p: float = 0.95,
                  max_new_tokens: int = 512, batch_size: int = 8, seed: int = 1234,
                  device: Optional[str] = None) -> dict:
    """Complete the prompts of `benchmark` (its first `limit` tasks) with the model in
    `model_dir`, write the samples JSONL `out` (task_id, completion); return a summary."""
    if limit is not None and limit < 1:
        raise Phi1Error("--limit must be positive")
    tasks = benchmarks.load(benchmark, split, limit)
    lm = load_model(model_dir, device)
    with progress_bar(len(tasks) * n_samples, f"{benchmark}: generate") as update:
        samples = generate(lm, tasks, n_samples=n_samples, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=update)
    write_samples(out, samples)
    return {"benchmark": benchmark, "model": str(model_dir), "n_tasks": len(tasks), "n_samples": len(samples),
            "out": str(out)}
