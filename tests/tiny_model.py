"""A tiny real causal LM for registry and report tests: a 2-layer PhiForCausalLM with a
byte-level BPE tokenizer trained on a few lines, saved as an HF folder."""

from __future__ import annotations

from pathlib import Path

TEXT = [
    "def add(a, b):\n    return a + b\n",
    "def greet(name):\n    print('hello', name)\n",
    "for i in range(10):\n    total += i\n",
]


def make_tiny_model(path: str | Path, seed: int = 0, context: int = 128) -> Path:
    """Save a 2-layer PhiForCausalLM + tokenizer under `path`; `seed` changes the weights,
    `context` is its max_position_embeddings."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    cfg = PhiConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=context,
                    eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id, pad_token_id=fast.eos_token_id)
    model = PhiForCausalLM(cfg)
    out = Path(path)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def log_as_trained(path: str | Path, stage: str = "finetune") -> str:
    """Log the model folder `path` in a `stage` run as a training stage with `log_model:
    true` does (phi1.engines.training.run.log_trained_model), so `register` finds it;
    returns that run's id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from phi1.engines.training.run import log_trained_model
    from phi1.tracking import stage_run

    with stage_run(stage) as run:
        log_trained_model(Path(path), AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                          stage)
    return run.info.run_id
