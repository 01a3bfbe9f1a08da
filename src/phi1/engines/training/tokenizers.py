"""Tokenizers the training stages share: loading a local HF tokenizer folder, and the
fingerprint that ties token shards to the tokenizer that made them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from phi1.errors import Phi1Error


def load_tokenizer(path: str | Path):
    """A local HF tokenizer directory; it must have an eos token (pad falls back to it)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer_config.json").is_file() and not (p / "tokenizer.json").is_file():
        raise Phi1Error(f"tokenize.tokenizer: {p} is not an HF tokenizer directory")
    tok = AutoTokenizer.from_pretrained(str(p))
    if tok.eos_token is None:
        raise Phi1Error(f"tokenize.tokenizer: {p} has no eos token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """md5 of the vocabulary and eos token: finetuning checks that its tokens were made
    with the base model's tokenizer (robust to how the tokenizer files were re-saved)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.md5(json.dumps([vocab, tokenizer.eos_token]).encode()).hexdigest()
