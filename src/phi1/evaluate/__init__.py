"""`phi1 evaluate`: HumanEval and MBPP by generation, sandboxed execution and pass@k.

    phi1 evaluate execute --benchmark humaneval --samples s.jsonl --out r.jsonl
    phi1 evaluate generate --model checkpoints/phi1 --benchmark mbpp --out s.jsonl
    phi1 evaluate run                                   # the DVC stage

Modules: sandbox (runs untrusted programs), benchmarks (tasks, programs, prompts),
passk (the estimator), execute (samples -> verdicts), generate (a model -> samples),
solution_loss (the loss of reference solutions given their prompts), stage (the
`evaluate` stage with its MLflow evaluations).
"""


def run(*args, **kwargs):
    """The `evaluate` stage (`phi1.evaluate.stage.run`), imported on first use: the
    sandbox and the CLI's `execute` need none of its heavy imports."""
    from phi1.evaluate.stage import run as stage_run

    return stage_run(*args, **kwargs)


__all__ = ["run"]
