"""`phi1 decontaminate`: prune training items that look like HumanEval or MBPP (see stage.py).

Modules: stage (the stage's `run`), references (the benchmark tasks as references),
units (the functions of a training item), ngram, detect (embedding and AST detectors),
astmatch (the AST match rate), report (the tau sweep and its plot).
"""

from phi1.decontaminate.stage import run

__all__ = ["run"]
