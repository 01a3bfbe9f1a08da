"""`phi1 evaluate`: HumanEval and MBPP by generation, sandboxed execution and pass@k.

    phi1 evaluate execute --benchmark humaneval --samples s.jsonl --out r.jsonl
    phi1 evaluate generate --model checkpoints/phi1 --benchmark mbpp --out s.jsonl
    phi1 evaluate run                                   # the DVC stage

Modules: generate (prompts -> samples with any local HF causal LM), execute (samples ->
verdicts in the sandbox, pass@k), timeouts (per-task time limits calibrated from the
references' CPU time), table3 (scores on the tasks similar / not similar to the
training data per the decontaminate report, phi-1's Table 3), stage (the `evaluate`
stage with its MLflow evaluations). The engines it drives (sandbox, benchmarks,
generation, solution_loss, passk) are on the ground floor, phi1.engines.
"""

from phi1.evaluate.stage import run

__all__ = ["run"]
