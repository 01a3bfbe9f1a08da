"""Fixtures for the training tests (tokenize, pretrain, finetune, engines/training), a
pytest plugin of the root conftest so the session-wide ones are made once: real CodeTextbook / CodeExercises datasets built from
standard-library files, and tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from pathlib import Path

import pytest

from phi1.config import FinetuneConfig, PretrainConfig, TokenizeConfig
from phi1.io import write_shards

STDLIB = Path(sysconfig.get_paths()["stdlib"])
EXERCISE_FILES = ["textwrap.py", "shlex.py", "fnmatch.py", "glob.py", "statistics.py", "fractions.py",
                  "colorsys.py", "bisect.py", "heapq.py", "string.py", "calendar.py", "difflib.py"]

# A 2-layer, 32-wide Phi: a training step takes milliseconds.
TINY_MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def filtered_rows(files: list[Path], root: Path) -> list[dict]:
    """Rows in the data/codetextbook/filtered schema (data/raw columns + quality_score)."""
    rows = []
    for f in files:
        text = f.read_text()
        rel = str(f.relative_to(root))
        rows.append({
            "id": hashlib.sha1(f"test\0{rel}".encode()).hexdigest()[:16], "source": "test", "path": rel,
            "content": text, "n_bytes": len(text.encode()), "n_chars": len(text),
            "n_lines": text.count("\n") + 1, "hash": hashlib.sha256(text.encode()).hexdigest(),
            "quality_score": 0.9,
        })
    return rows


def exercise_rows(files: list[Path]) -> list[dict]:
    """CodeExercises rows: prompt = the module's imports + a function's signature and
    docstring, solution = its body; one per documented top-level function."""
    rows = []
    for f in files:
        src = f.read_text()
        lines = src.splitlines(keepends=True)
        tree = ast.parse(src)
        imports = "".join(ast.get_source_segment(src, n) + "\n" for n in tree.body
                          if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or not ast.get_docstring(node) or len(node.body) < 2:
                continue
            doc = node.body[0]
            prompt = "".join(lines[node.lineno - 1:doc.end_lineno])
            solution = "".join(lines[doc.end_lineno:node.end_lineno])
            rows.append({"prompt": (imports + "\n" if imports else "") + prompt, "solution": solution})
    return rows


@pytest.fixture
def filtered(tmp_path, small_corpus) -> Path:
    out = tmp_path / "data" / "codetextbook" / "filtered"
    out.mkdir(parents=True)
    write_shards(out, filtered_rows(sorted(small_corpus.rglob("*.py")), small_corpus), shard_size=8)
    return out


@pytest.fixture
def exercises(tmp_path) -> Path:
    out = tmp_path / "data" / "codeexercises"
    out.mkdir(parents=True)
    write_shards(out, exercise_rows([STDLIB / f for f in EXERCISE_FILES]), shard_size=50)
    return out


@pytest.fixture
def tokenize_cfg() -> TokenizeConfig:
    return TokenizeConfig(vocab_size=512, seq_len=64, val_fraction=0.1)


def pretrain_cfg(**kw) -> PretrainConfig:
    base = dict(model_overrides=TINY_MODEL, max_steps=12, micro_batch_size=4, global_batch_size=8,
                warmup_steps=2, eval_every=4, eval_batches=2, checkpoint_every=4, log_every=2,
                log_model=False, log_system_metrics=False, lr=3e-3)
    base.update(kw)
    return PretrainConfig(**base)


def finetune_cfg(**kw) -> FinetuneConfig:
    base = dict(max_steps=6, micro_batch_size=4, global_batch_size=8, warmup_steps=1, eval_every=3,
                checkpoint_every=3, log_every=1, log_model=False, log_system_metrics=False, lr=3e-3)
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """One MLflow sqlite store for the training tests: creating its tables costs ~10 s on
    this box, so tests share it and tell their runs apart by run id."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def tokenized(tmp_path_factory, mlflow_store) -> Path:
    """A project folder with real CodeTextbook and CodeExercises datasets, tokenized once
    per session (tokenizer/, data/tokens/{pretrain,finetune}); tests read it, never write."""
    import os

    from tests.conftest import CORPUS_FILES

    root = tmp_path_factory.mktemp("tokenized")
    filtered_dir = root / "data" / "codetextbook" / "filtered"
    exercises_dir = root / "data" / "codeexercises"
    filtered_dir.mkdir(parents=True)
    exercises_dir.mkdir(parents=True)
    write_shards(filtered_dir, filtered_rows([STDLIB / f for f in CORPUS_FILES], STDLIB), shard_size=8)
    write_shards(exercises_dir, exercise_rows([STDLIB / f for f in EXERCISE_FILES]), shard_size=50)
    from phi1.tokenize import run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_store)
        mp.setenv("PHI1_EXPERIMENT", "phi1-test")
        mp.chdir(root)
        run(TokenizeConfig(vocab_size=512, seq_len=64, val_fraction=0.1), [(filtered_dir, "content")], exercises_dir,
            tokenizer_out="tokenizer", pretrain_out="data/tokens/pretrain", finetune_out="data/tokens/finetune",
            metrics_path="metrics/tokenize.json")
    assert os.path.isdir(root / "data" / "tokens" / "finetune")
    return root
