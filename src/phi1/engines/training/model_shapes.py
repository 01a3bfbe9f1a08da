"""Model presets: PhiConfig keyword sets, and the numbers derived from a config.

    from phi1.engines.training.model_shapes import build_config
    config = build_config("tiny", vocab_size=4096, seq_len=256)   # -> transformers.PhiConfig

`phi-1` is transformers' PhiConfig default shape (the shape of microsoft/phi-1: 24 layers,
hidden 2048, MLP 8192, 32 heads of 64, rotary on half of each head, untied head);
`phi-1-small` is the paper's 350M model; `tiny` is the embedded CPU default (~2M
parameters at vocab 4096), small enough that a few hundred steps run in minutes on two
cores yet deep enough to show a falling validation loss.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

from phi1.errors import Phi1Error

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=256,
    ),
    "phi-1-small": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=20, num_attention_heads=16,
        max_position_embeddings=2048,
    ),
    "phi-1": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
        max_position_embeddings=2048,
    ),
}
"""Preset name -> PhiConfig keywords. Shared by all presets (set in `build_config`):
gelu_new, partial rotary factor 0.5 (rotary dim 32 for 64-wide heads), untied head."""

# Peak dense bf16/fp16 tensor FLOP/s by GPU name fragment (vendor datasheets), for MFU
# when params give no `peak_flops`. The first fragment found in the device name wins.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("V100", 125e12),
)


def build_config(
    preset: str,
    vocab_size: int,
    seq_len: int,
    dropout: float = 0.0,
    overrides: Mapping[str, Any] | None = None,
    eos_token_id: int | None = None,
):
    """The PhiConfig of `preset` for a tokenizer of `vocab_size` and sequences of `seq_len`."""
    from transformers import PhiConfig

    if preset not in PRESETS:
        raise Phi1Error(f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}")
    kw: dict[str, Any] = dict(
        hidden_act="gelu_new", partial_rotary_factor=0.5, tie_word_embeddings=False,
        resid_pdrop=dropout, embd_pdrop=dropout, attention_dropout=0.0,
    )
    kw.update(PRESETS[preset])
    kw["max_position_embeddings"] = max(kw["max_position_embeddings"], seq_len)
    kw["vocab_size"] = vocab_size
    if eos_token_id is not None:
        # One special token, <|endoftext|>, plays bos, eos and pad (as in codegen's tokenizer).
        kw.update(bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    known = set(PhiConfig().to_dict()) | {"partial_rotary_factor"}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise Phi1Error(f"model_overrides.{key}: not a PhiConfig key")
        kw[key] = value
    try:
        config = PhiConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise Phi1Error(f"model config of preset {preset!r}: {exc}") from None
    if config.hidden_size % config.num_attention_heads:
        raise Phi1Error(
            f"model config of preset {preset!r}: hidden_size {config.hidden_size} is not a multiple of "
            f"num_attention_heads {config.num_attention_heads}"
        )
    return config


def resolve_attention(choice: str) -> str:
    """`auto` -> flash_attention_2 when CUDA and the flash-attn package are present, else sdpa."""
    if choice != "auto":
        return choice
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls plus 6*L*T*d for attention scores
    (PaLM, Chowdhery et al. 2022, appendix B: 6N + 12*L*H*Q*T counts forward+backward of
    QK^T and AV over a full T-long context; causal attention does half of it, which
    PaLM still counts; we follow PaLM so MFU compares with published numbers).
    N excludes the input embedding, a lookup that does no multiply-add."""
    d = config.hidden_size
    layers = config.num_hidden_layers
    per_layer = 4 * d * d + 4 * d + 2 * d * config.intermediate_size + config.intermediate_size + d + 2 * d
    n = layers * per_layer + 2 * d + d * config.vocab_size + config.vocab_size
    return 6.0 * n + 12.0 * layers * d * seq_len


def peak_flops(device_name: str | None) -> float | None:
    """Peak FLOP/s of a GPU from its name, or None when unknown (e.g. a CPU)."""
    if not device_name:
        return None
    for fragment, value in PEAK_FLOPS:
        if fragment in device_name:
            return value
    return None
