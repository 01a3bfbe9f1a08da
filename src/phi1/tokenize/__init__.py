"""`phi1 tokenize`: the BPE tokenizer and packed token shards for pretraining and finetuning."""

from phi1.tokenize.stage import run

__all__ = ["run"]
