"""Solution loss: the mean per-token loss (nats) of a benchmark's reference solutions
given their prompts, a continuous score that moves at small scale where pass@1 stays 0.

    result = solution_loss(load_model("checkpoints/base"), benchmarks.load("humaneval"))
    result.loss, result.tokens            # token-weighted mean over every solution token
    phi1 evaluate run                     # the stage reports it beside pass@k

HumanEval: prompt + canonical_solution. MBPP: the prompt generation uses
(`benchmarks.mbpp_prompt`) + the reference `code`, its line endings made `\n`. The loss counts the solution tokens
only; prompt tokens are context. No end-of-text token is scored after the solution.

Boundary. Prompt and prompt+solution are tokenized; when the prompt's tokens are a
prefix of the joint tokens, the joint tokens are scored with the first len(prompt)
masked: the solution is then tokenized as in running text, as pretraining sees code.
When a BPE merge crosses the boundary (e.g. a prompt ending in a newline and a body
starting with spaces), no token split puts the prompt alone on the left, so the
prompt and the solution are tokenized apart and concatenated, which is exactly what
generation sees (the prompt is encoded alone and the model continues it) and how
finetuning encodes exercises. Either way the scored tokens decode to the solution.
`split_boundary` counts the tasks that took the second path.

Sequences longer than the model's `max_position_embeddings` lose prompt tokens from
the left (at least one is kept as context), then solution tokens from the end; such
tasks are counted in `truncated`. Batches are right-padded with an attention mask and
sorted by length, so padding is small and results do not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from phi1.errors import Phi1Error
from phi1.engines.benchmarks import Task


@dataclass
class SolutionLoss:
    """The solution loss of one model on one benchmark."""

    loss: float
    """Mean loss over every solution token of every task (token-weighted), nats."""
    task_mean: float
    """Mean over tasks of each task's mean token loss, nats."""
    tokens: int
    """Solution tokens scored."""
    tasks: int
    truncated: int
    """Tasks cut to fit the model's context."""
    split_boundary: int
    """Tasks whose prompt and solution were tokenized apart (a merge crossed the boundary)."""
    per_task: list[dict] = field(default_factory=list)
    """{task_id, loss, tokens, truncated} per task, in task order."""

    def metrics(self) -> dict:
        return {
            "solution_loss": self.loss, "solution_loss_task_mean": self.task_mean,
            "solution_tokens": self.tokens, "solution_tasks": self.tasks,
            "solution_truncated": self.truncated, "solution_split_boundary": self.split_boundary,
        }


def encode(tokenizer, prompt: str, solution: str) -> tuple[list[int], int, bool]:
    """(ids, n_context, split): the scored sequence, how many leading ids are prompt
    context, and whether prompt and solution had to be tokenized apart."""
    # verbose=False: over-long sequences are expected here and cut by `fit`, not warned about.
    p = tokenizer(prompt, verbose=False)["input_ids"]
    joint = tokenizer(prompt + solution, verbose=False)["input_ids"]
    if len(joint) > len(p) and joint[:len(p)] == p:
        return list(joint), len(p), False
    s = tokenizer(solution, add_special_tokens=False, verbose=False)["input_ids"]
    return list(p) + list(s), len(p), True


def reference(task: Task) -> str:
    """The solution scored: the reference with Windows line endings made Unix (MBPP's
    jsonl stores `\\r\\n` in 499 of its 500 test solutions, a storage artefact that would
    otherwise dominate the loss of a model trained on Unix-style code)."""
    return task.canonical_solution.replace("\r\n", "\n")


def fit(ids: list[int], n_context: int, max_len: int) -> tuple[list[int], int, bool]:
    """Cut (ids, n_context) to `max_len` tokens: prompt from the left (keeping one
    context token), then the solution's tail."""
    if len(ids) <= max_len:
        return ids, n_context, False
    drop = max(0, min(len(ids) - max_len, n_context - 1))
    ids, n_context = ids[drop:], n_context - drop
    return ids[:max_len], n_context, True


def context_length(lm) -> int:
    n = getattr(lm.model.config, "max_position_embeddings", None)
    if not n:
        n = getattr(lm.tokenizer, "model_max_length", None)
    if not n or n > 1_000_000:  # tokenizers without a limit report a huge sentinel
        raise Phi1Error(f"{lm.name}: cannot tell the model's context length (no max_position_embeddings)")
    return int(n)


def solution_loss(
    lm,
    tasks: Sequence[Task],
    *,
    batch_size: int = 8,
    progress: Optional[Callable[[int], None]] = None,
) -> SolutionLoss:
    """Score every task's reference solution under `lm` (a `generate.LoadedModel`)."""
    import torch
    import torch.nn.functional as F

    if not tasks:
        raise Phi1Error("solution loss: no tasks to score")
    max_len = context_length(lm)
    rows = []
    for i, t in enumerate(tasks):
        ids, n_ctx, split = encode(lm.tokenizer, t.prompt, reference(t))
        ids, n_ctx, cut = fit(ids, n_ctx, max_len)
        rows.append((i, ids, n_ctx, split, cut))
    order = sorted(rows, key=lambda r: len(r[1]))
    sums = [0.0] * len(tasks)
    counts = [0] * len(tasks)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    done = 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(r[1]) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)  # target positions
        for b, (_, seq, n_ctx, _, _) in enumerate(batch):
            ids[b, :len(seq)] = torch.tensor(seq)
            attn[b, :len(seq)] = 1
            scored[b, max(n_ctx, 1):len(seq)] = True  # the first token has no predictor
        ids, attn, scored = ids.to(lm.device), attn.to(lm.device), scored.to(lm.device)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=attn, use_cache=False).logits  # (B, T, V)
        # logits at t predict token t+1: solution token j is scored by position j-1.
        keep = scored[:, 1:]  # (B, T-1)
        nll = F.cross_entropy(logits[:, :-1][keep].float(), ids[:, 1:][keep], reduction="none")  # (N,)
        per_row = torch.zeros(len(batch), device=nll.device).index_add_(
            0, keep.nonzero()[:, 0], nll).tolist()
        for b, r in enumerate(batch):
            sums[r[0]] = per_row[b]
            counts[r[0]] = len(r[1]) - max(r[2], 1)
        done += len(batch)
        if progress is not None:
            progress(done)
    total = sum(counts)
    per_task = [
        {"task_id": t.task_id, "loss": sums[i] / counts[i] if counts[i] else None,
         "tokens": counts[i], "truncated": rows[i][4]}
        for i, t in enumerate(tasks)
    ]
    task_losses = [p["loss"] for p in per_task if p["loss"] is not None]
    if not total:
        raise Phi1Error("solution loss: the reference solutions encode to no tokens")
    return SolutionLoss(
        loss=sum(sums) / total, task_mean=sum(task_losses) / len(task_losses), tokens=total, tasks=len(tasks),
        truncated=sum(r[4] for r in rows), split_boundary=sum(r[3] for r in rows), per_task=per_task,
    )


__all__ = ["SolutionLoss", "solution_loss", "encode", "fit"]
