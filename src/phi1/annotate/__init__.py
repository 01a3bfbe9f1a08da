"""`phi1 annotate`: rate a seeded sample of files for educational value (heuristic rubric or an LLM)."""

from phi1.annotate.stage import run

__all__ = ["run"]
