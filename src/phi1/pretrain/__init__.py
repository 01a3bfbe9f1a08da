"""`phi1 pretrain`: train PhiForCausalLM from scratch on the CodeTextbook tokens (phi-1-base)."""

from phi1.pretrain.stage import run

__all__ = ["run"]
