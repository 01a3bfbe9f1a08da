"""`phi1 finetune`: continue phi-1-base on the CodeExercises tokens (phi-1)."""

from phi1.finetune.stage import run

__all__ = ["run"]
