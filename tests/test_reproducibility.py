"""The same data on every CPU: the data stages' outputs do not depend on the thread count or
on settings that would let a library trade float32 precision for speed.

Each run is one subprocess (the settings are read when torch/oneDNN/BLAS load) that calls the
stages' `run` functions in dvc.yaml order with dvc.yaml's paths, under test-sized params.
The outputs are compared file by file by md5, the hash DVC records for each file of an out.

Every data stage runs, ingest -> tokenize, validate included, once with one thread and once
with two threads and oneDNN allowed to compute float32 in bfloat16.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_ablate import shrunk_params

# What a different machine or a user's shell may have set. None of it may change an output.
SERIAL = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
OTHER = {
    "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
    "ONEDNN_DEFAULT_FPMATH_MODE": "BF16",  # oneDNN may compute float32 primitives in bfloat16
    "DNNL_DEFAULT_FPMATH_MODE": "BF16",  # its older name
    "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1",  # the CUDA counterpart (no effect on a CPU)
}

# Each stage as dvc.yaml runs it: the `run` call with dvc.yaml's paths.
STAGES = {
    "ingest": "run(cfg, out='data/raw', metrics_path='metrics/ingest.json')",
    "annotate": "run(cfg, raw='data/raw', out='data/annotations', metrics_path='metrics/annotate.json')",
    "embed": "run(cfg, raw='data/raw', out='data/embeddings', metrics_path='metrics/embed.json', progress=False)",
    "filter": ("run(cfg, raw='data/raw', annotations='data/annotations', embeddings='data/embeddings', "
               "out='data/codetextbook/filtered', model_dir='models/quality', metrics_path='metrics/filter.json', "
               "plots_dir='plots/filter')"),
    "synthesize": ("run(cfg, filtered='data/codetextbook/filtered', textbook_out='data/codetextbook/textbook', "
                   "exercises_out='data/codeexercises', metrics_path='metrics/synthesize.json', progress=False)"),
    "decontaminate": ("run(cfg, datasets={'filtered': 'data/codetextbook/filtered', "
                      "'textbook': 'data/codetextbook/textbook', 'exercises': 'data/codeexercises'}, "
                      "out='data/pruned', report_path='reports/contamination.json', "
                      "plot_path='reports/contamination_sweep.png', metrics_path='metrics/decontaminate.json', "
                      "progress=False)"),
    "validate": ("run(cfg, datasets={n: p for n, p in [('raw', 'data/raw'), ('annotations', 'data/annotations'), "
                 "('filtered', 'data/codetextbook/filtered'), ('textbook', 'data/codetextbook/textbook'), "
                 "('exercises', 'data/codeexercises'), ('pruned', 'data/pruned/exercises')]}, "
                 "expectations_dir='expectations', out='reports/validation', filter_metrics='metrics/filter.json')"),
    "tokenize": ("run(cfg, pretrain_inputs=None, finetune_input=finetune(), tokenizer_out='tokenizer', "
                 "pretrain_out='data/tokens/pretrain', finetune_out='data/tokens/finetune', "
                 "metrics_path='metrics/tokenize.json')"),
}

DRIVER = """
import importlib, sys
from pathlib import Path
from phi1.config import load_stage_config
def finetune():  # the exercises when decontaminate wrote them, else pretraining tokens only
    return 'data/pruned/exercises' if Path('data/pruned/exercises').exists() else None
for stage, call in {calls!r}:
    run = importlib.import_module(f'phi1.{{stage}}.stage').run
    cfg = load_stage_config(stage, 'params.yaml')
    result = eval(call)
    if stage == 'validate' and result is not True:
        sys.exit('validate: a gate failed')
"""


def run_stages(root: Path, stages: list[str], settings: dict[str, str]) -> None:
    """Run `stages` in one fresh interpreter in `root` with `settings` in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in {**SERIAL, **OTHER}}
    env.update(settings, HF_HUB_OFFLINE="1", PHI1_EXPERIMENT="phi1-test",
               MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    script = DRIVER.format(calls=[(s, STAGES[s]) for s in stages])
    done = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{stages} under {settings}:\n{done.stderr[-4000:]}"


def digests(root: Path, outs: list[str]) -> dict[str, str]:
    """{file: md5} of every file under `outs` (folders or files), as DVC hashes them."""
    found = {}
    for out in outs:
        base = root / out
        assert base.exists(), f"{out} was not written"
        for f in sorted([base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]):
            found[f.relative_to(root).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
    return found


def stage_outs(stages: list[str]) -> list[str]:
    """The outs, metrics and plots dvc.yaml gives these stages."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = []
    for s in stages:
        for key in ("outs", "metrics", "plots"):
            for item in spec[s].get(key, []):
                outs.append(next(iter(item)) if isinstance(item, dict) else item)
    return outs


def project(root: Path, corpus: Path) -> Path:
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(shrunk_params(corpus), sort_keys=False))
    (root / "expectations").symlink_to(REPO / "expectations")
    return root


def assert_same(first: dict[str, str], second: dict[str, str]) -> None:
    assert first.keys() == second.keys()
    differ = sorted(f for f in first if first[f] != second[f])
    assert not differ, f"outputs differ between the two settings: {differ}"


@pytest.mark.slow  # ~45 s: two interpreters run the eight data stages
def test_every_data_stage_gives_the_same_bytes_under_other_threads_and_fpmath(tmp_path, small_corpus):
    """ingest -> tokenize (validate included) twice, each in one interpreter."""
    stages = ["ingest", "annotate", "embed", "filter", "synthesize", "decontaminate", "validate", "tokenize"]
    runs = {}
    for name, settings in (("serial", SERIAL), ("other", OTHER)):
        root = project(tmp_path / name, small_corpus)
        run_stages(root, stages, settings)
        runs[name] = digests(root, stage_outs(stages))
    assert any(f.startswith("data/tokens/finetune/") for f in runs["serial"])
    assert any(f.startswith("reports/validation/") for f in runs["serial"])
    assert_same(runs["serial"], runs["other"])
    metrics = json.loads((tmp_path / "serial/metrics/filter.json").read_text())
    assert 0 < metrics["n_kept"] < metrics["n_scored"]  # the filter kept some files and dropped some
