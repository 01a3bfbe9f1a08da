"""Stage `finetune`: phi-1-base on the CodeExercises tokens -> phi-1.

    phi1 finetune                                   # params.yaml section `finetune`
    phi1 finetune -S finetune.loss_on_solution_only=false

Reads `data/tokens/finetune` (from `phi1 tokenize`) and `checkpoints/base` (from
`phi1 pretrain`), trains with the loop in `phi1.engines.training.loop` (state in
`checkpoints/.state/finetune`) and saves model + tokenizer to `checkpoints/phi1`. With
`loss_on_solution_only` (default) the prompt tokens are context only, as the model is
asked to complete function bodies.
"""

from __future__ import annotations

from pathlib import Path

from phi1.config import FinetuneConfig
from phi1.errors import Phi1Error
from phi1.engines.training.data import MASK_PROMPT, MASK_SOLUTION
from phi1.engines.training.run import check_tokens, run_training


def run(
    cfg: FinetuneConfig,
    tokens: str | Path,
    base: str | Path,
    out: str | Path,
    state_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
) -> dict:
    """Continue the model folder `base` on the token folder `tokens`, resuming from
    `state_dir`; export the best checkpoint to `out`; return the metrics written."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from phi1.tracking import content_hash
    from phi1.engines.training.tokenizers import load_tokenizer

    base = Path(base)
    if not (base / "config.json").is_file():
        raise Phi1Error(f"base model not found: {base} (run `phi1 pretrain` first)")
    tok = load_tokenizer(base)
    meta = check_tokens(Path(tokens), tok, str(base))
    vocab = AutoConfig.from_pretrained(str(base)).vocab_size
    if vocab < meta["vocab_size"]:
        raise Phi1Error(f"{base} has {vocab} embedding rows but {tokens} needs {meta['vocab_size']}")

    def build(attention: str):
        return AutoModelForCausalLM.from_pretrained(
            str(base), attn_implementation=attention, dtype=torch.float32,
            resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
        )

    return run_training(
        "finetune", cfg, build, tok, Path(tokens), Path(out), Path(state_dir), Path(metrics_path), Path(plots_dir),
        min_mask=MASK_SOLUTION if cfg.loss_on_solution_only else MASK_PROMPT,
        lineage=[str(tokens), str(base)],
        fingerprint_extra={"tokens": meta, "base": content_hash(base / "model.safetensors")},
    )
