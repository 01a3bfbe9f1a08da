"""Continuous emergence measures: how well a checkpoint knows each probe's reference
program, where pass rates are all 0 at small scale.

    losses = probe_solution_loss(lm, probes)     # {probe id: {nats_per_char, chars, ...}}
    topk = api_topk(lm, probes, k=10)            # {probe id: {names, hits}}
    summarize(probes, losses, topk)              # overall and per library
    paired_t([0.1, -0.2, 0.05])                  # mean, sd, n, 95% Student-t interval

Probe solution loss: the loss of a probe's reference body given its prompt, through
`phi1.engines.solution_loss` (the one evaluate uses for HumanEval/MBPP), divided by the
characters scored instead of the tokens, so checkpoints with different tokenizers
compare: nats per character. A checkpoint's (or a library's) `solution_loss` is the mean
over its probes, so the emergence delta's mean is exactly finetuned minus base.

API top-k: the library API names a reference uses are the attribute names of every
attribute chain rooted at a name the library's imports bind (`pygame.display.set_mode`
gives `display` and `set_mode`; `tk.Label`, `ttk.Combobox`, `plt.subplots`), found with
`ast`, every occurrence counted. With one forward pass over prompt + reference, a name
is a hit when the reference token that holds its first character ranks among the model's
k most likely next tokens there (fewer than k tokens score higher), given the prompt and
the reference so far. api_topk = hits / names, pooled over the probes.
"""

from __future__ import annotations

import ast
import math
from typing import Optional, Sequence

from phi1.engines.solution_loss import context_length, encode, fit, solution_loss
from phi1.errors import Phi1Error
from phi1.probe.suite import Probe


def as_task(probe: Probe):
    """A probe as an evaluate Task: a function body completed after a HumanEval-style prompt,
    so generation stops where HumanEval's does; its reference is what solution loss scores."""
    from phi1.engines.benchmarks import Task

    return Task(benchmark="humaneval", task_id=probe.id, prompt=probe.prompt,
                canonical_solution=probe.reference, prefix="", test="")


def _scored_chars(lm, probe: Probe, max_len: int) -> int:
    """Characters of the reference the solution loss scored: all of them unless the
    model's context cut the reference's tail."""
    ids, n_ctx, _ = encode(lm.tokenizer, probe.prompt, probe.reference)
    kept, kept_ctx, _ = fit(ids, n_ctx, max_len)
    if len(kept) - kept_ctx == len(ids) - n_ctx:  # only prompt tokens were cut
        return len(probe.reference)
    return len(lm.tokenizer.decode(kept[kept_ctx:]))


def probe_solution_loss(lm, probes: Sequence[Probe], *, batch_size: int = 8) -> dict[str, dict]:
    """{probe id: {nats_per_char, nats, chars, tokens, truncated}} under `lm` (a loaded model)."""
    result = solution_loss(lm, [as_task(p) for p in probes], batch_size=batch_size)
    max_len = context_length(lm)
    out = {}
    for p, row in zip(probes, result.per_task):
        if row["loss"] is None:
            raise Phi1Error(f"probe {p.id}: its reference solution encodes to no tokens")
        nats = row["loss"] * row["tokens"]
        chars = _scored_chars(lm, p, max_len) if row["truncated"] else len(p.reference)
        out[p.id] = {"nats_per_char": nats / chars, "nats": nats, "chars": chars, "tokens": row["tokens"],
                     "truncated": bool(row["truncated"])}
    return out


# --------------------------------------------------------------------------- API names


def _library_modules(tree: ast.AST, library: str) -> set[str]:
    """Names bound by imports from `library` (`import tkinter as tk`, `from tkinter import ttk`)."""
    def ours(dotted: str) -> bool:
        return dotted == library or dotted.startswith(library + ".")

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if ours(a.name):
                    names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and ours(node.module):
            names.update(a.asname or a.name for a in node.names if a.name != "*")
    return names


def api_names(prompt: str, reference: str, library: str) -> list[tuple[int, str]]:
    """(character offset in `reference`, name) of every library API name the reference
    uses, in order (see the module docstring)."""
    source = prompt + reference
    tree = ast.parse(source)
    roots = _library_modules(tree, library)
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col_bytes: int) -> int:  # ast columns are UTF-8 byte offsets
        return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col_bytes].decode())

    found = []
    inner: set[int] = set()
    for node in ast.walk(tree):  # outer chains before their inner parts
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        chain = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            chain.append(cur)
            inner.add(id(cur))
            cur = cur.value
        if not (isinstance(cur, ast.Name) and cur.id in roots):
            continue
        for a in chain:
            at = offset(a.end_lineno, a.end_col_offset) - len(a.attr) - len(prompt)
            if at >= 0:
                found.append((at, a.attr))
    return sorted(found)


def _solution_offsets(tokenizer, prompt: str, solution: str, split: bool) -> list[tuple[int, int]]:
    """(start, end) in `solution` of each solution token `encode` gives."""
    if split:
        return list(tokenizer(solution, add_special_tokens=False, return_offsets_mapping=True,
                              verbose=False)["offset_mapping"])
    n = len(tokenizer(prompt, verbose=False)["input_ids"])
    spans = tokenizer(prompt + solution, return_offsets_mapping=True, verbose=False)["offset_mapping"][n:]
    return [(s - len(prompt), e - len(prompt)) for s, e in spans]


def _token_at(spans: list[tuple[int, int]], at: int) -> Optional[int]:
    """Index of the token holding character `at`."""
    for j, (s, e) in enumerate(spans):
        if s <= at < e:
            return j
    return None


def api_topk(lm, probes: Sequence[Probe], *, k: int = 10) -> dict[str, dict]:
    """{probe id: {names, hits}}: library API names in the reference and how many of them
    `lm` ranks in its top k where they start (one forward pass per probe)."""
    import torch

    if k < 1:
        raise Phi1Error(f"api top-k: k must be >= 1, got {k}")
    max_len = context_length(lm)
    out = {}
    for p in probes:
        names = api_names(p.prompt, p.reference, p.library)
        ids, n_ctx, split = encode(lm.tokenizer, p.prompt, p.reference)
        spans = _solution_offsets(lm.tokenizer, p.prompt, p.reference, split)
        if len(spans) != len(ids) - n_ctx:
            raise Phi1Error(f"probe {p.id}: token offsets do not match the scored tokens")
        fitted, fit_ctx, _ = fit(ids, n_ctx, max_len)
        drop = n_ctx - fit_ctx
        positions = []
        for at, _ in names:
            j = _token_at(spans, at)
            pos = None if j is None else n_ctx + j - drop
            positions.append(pos if pos is not None and 1 <= pos < len(fitted) else None)
        hits = 0
        counted = [q for q in positions if q is not None]
        if counted:
            with torch.inference_mode():
                logits = lm.model(input_ids=torch.tensor([fitted], device=lm.device), use_cache=False).logits[0]
            for q in counted:
                row = logits[q - 1].float()
                hits += int((row > row[fitted[q]]).sum().item() < k)
        out[p.id] = {"names": len(counted), "hits": hits}
    return out


# --------------------------------------------------------------------------- summaries


def summarize(probes: Sequence[Probe], losses: dict[str, dict], topk: dict[str, dict]) -> dict:
    """{solution_loss, api_topk, api_names, solution_truncated, by_library: {lib: {...}}}:
    solution_loss is the mean over probes of nats per character; api_topk pooled hits /
    names (None when no name was counted)."""
    def agg(group: list[Probe]) -> dict:
        names = sum(topk[p.id]["names"] for p in group)
        return {
            "solution_loss": sum(losses[p.id]["nats_per_char"] for p in group) / len(group),
            "api_topk": sum(topk[p.id]["hits"] for p in group) / names if names else None,
            "api_names": names,
            "solution_truncated": sum(losses[p.id]["truncated"] for p in group),
        }

    libraries = sorted({p.library for p in probes})
    return {**agg(list(probes)), "by_library": {lib: agg([p for p in probes if p.library == lib]) for lib in libraries}}


def paired_t(diffs: Sequence[float]) -> dict:
    """{mean, sd, n, ci95: {low, high}}: the 95% Student-t interval of the mean of paired
    differences (df = n - 1); sd and ci95 are None below two pairs, and `note` says why."""
    n = len(diffs)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0, "ci95": None, "note": "no paired probes"}
    mean = sum(diffs) / n
    if n < 2:
        return {"mean": mean, "sd": None, "n": 1, "ci95": None, "note": "one probe: no interval"}
    from scipy.stats import t

    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci95": {"low": mean - half, "high": mean + half}}


def emergence(probes: Sequence[Probe], names: Sequence[str], losses: dict[str, dict[str, dict]],
              summaries: dict[str, dict]) -> dict:
    """Finetuned (the last of `names`, probe.checkpoints' order) minus base (the first):
    the per-probe solution loss differences with their paired t interval, overall and per
    library, and the API top-k difference. With one checkpoint there is nothing to pair:
    a `note` says so."""
    if len(names) < 2:
        return {"base": names[0] if names else None, "finetuned": None, "solution_loss_delta": None,
                "api_topk_delta": None,
                "note": "one checkpoint in probe.checkpoints: no finetuned-minus-base difference"}
    base, tuned = names[0], names[-1]

    def delta(group: Sequence[Probe]) -> dict:
        return paired_t([losses[tuned][p.id]["nats_per_char"] - losses[base][p.id]["nats_per_char"] for p in group])

    def topk_delta(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return None if a is None or b is None else a - b

    libraries = sorted({p.library for p in probes})
    return {
        "base": base, "finetuned": tuned, "solution_loss_delta": delta(probes),
        "api_topk_delta": topk_delta(summaries[tuned]["api_topk"], summaries[base]["api_topk"]),
        "by_library": {lib: {"solution_loss_delta": delta([p for p in probes if p.library == lib]),
                             "api_topk_delta": topk_delta(summaries[tuned]["by_library"][lib]["api_topk"],
                                                          summaries[base]["by_library"][lib]["api_topk"])}
                       for lib in libraries},
    }


__all__ = ["as_task", "probe_solution_loss", "api_names", "api_topk", "summarize", "paired_t", "emergence"]
