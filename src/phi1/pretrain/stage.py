"""Stage `pretrain`: PhiForCausalLM from scratch on the CodeTextbook tokens -> phi-1-base.

    phi1 pretrain                                  # params.yaml section `pretrain`
    phi1 pretrain -S pretrain.preset=phi-1-small
    accelerate launch --num_processes 8 -m phi1.cli pretrain -S pretrain.preset=phi-1

Reads `data/tokens/pretrain` and `tokenizer/` (from `phi1 tokenize`), trains with the
loop in `phi1.engines.training.loop` (checkpoints and exact resume in `checkpoints/.state/pretrain`)
and saves model + tokenizer to `checkpoints/base`.
"""

from __future__ import annotations

from pathlib import Path

from phi1.config import PretrainConfig
from phi1.engines.training.data import MASK_PROMPT
from phi1.engines.training.model_shapes import build_config
from phi1.engines.training.run import check_tokens, run_training


def run(
    cfg: PretrainConfig,
    tokens: str | Path,
    tokenizer: str | Path,
    out: str | Path,
    state_dir: str | Path,
    metrics_path: str | Path,
    plots_dir: str | Path,
) -> dict:
    """Train on the token folder `tokens` (made with `tokenizer`), resuming from
    `state_dir`; export the best checkpoint to `out`; return the metrics written."""
    from transformers import AutoModelForCausalLM

    from phi1.engines.training.tokenizers import load_tokenizer

    tok = load_tokenizer(tokenizer)
    meta = check_tokens(Path(tokens), tok, str(tokenizer))
    config = build_config(cfg.preset, meta["vocab_size"], meta["seq_len"], cfg.dropout,
                          cfg.model_overrides, eos_token_id=meta["eos_token_id"])

    def build(attention: str):
        return AutoModelForCausalLM.from_config(config, attn_implementation=attention)

    return run_training(
        "pretrain", cfg, build, tok, Path(tokens), Path(out), Path(state_dir), Path(metrics_path), Path(plots_dir),
        min_mask=MASK_PROMPT, lineage=[str(tokens), str(tokenizer)], fingerprint_extra={"tokens": meta},
    )
