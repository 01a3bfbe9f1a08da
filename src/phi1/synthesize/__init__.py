"""`phi1 synthesize`: a synthetic textbook and CodeExercises (see stage.py).

Modules: stage (the stage's `run`), lists (topics, audiences, function names), extractive
(the offline backend: real functions mined from the corpus), generate (the LLM backends),
exercise (CodeExercises records), checks (docstring examples run in the sandbox),
diversity (near-duplicate rate, pairwise similarity).
"""

from phi1.synthesize.stage import run

__all__ = ["run"]
