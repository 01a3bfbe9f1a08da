"""`phi1 probe`: the emergent-capability probe suite (Pygame, Tkinter) executed headless.

    phi1 probe list                                       # the suite as JSONL
    phi1 probe score --samples s.jsonl --out r.jsonl     # score completions
    phi1 probe run                                        # the DVC stage

Modules: suite (the probes and their programs), apivalidity (do the attribute chains of
a completion exist in the installed library), xvfb (a private X display), score
(samples -> verdicts and diagnostics in the sandbox), emergence (the continuous
measures: probe solution loss per character, API top-k, the finetuned-minus-base paired
t interval), stage (the `probe` stage with its MLflow evaluations).
"""

from phi1.probe.stage import run

__all__ = ["run"]
