"""A finished project copied to another folder keeps working there: its MLflow store
(runs, the registered champion, the training run's logged model) is rebased onto the copy
by the first phi1 command, and nothing in the copy reads or writes the original."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from phi1 import pretrain
from phi1.cli import app
from phi1.config import RegisterConfig
from phi1.register.stage import run as register_stage
from phi1.tracking import STORE_DIR_TAG, rebase_store, stage_run
from tests.training_fixtures import pretrain_cfg

OUTS = dict(out="checkpoints/base", state_dir="checkpoints/.state/pretrain", metrics_path="metrics/pretrain.json",
            plots_dir="plots/pretrain")


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> md5 (or the link target) of every file under `root`."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def store_cells(db: Path) -> list[tuple[str, str, str]]:
    """(table, column, value) of every text cell of a sqlite store."""
    cells = []
    with sqlite3.connect(db) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for t in tables:
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]
            for c in cols:
                for (v,) in con.execute(f'SELECT "{c}" FROM "{t}" WHERE typeof("{c}") = \'text\''):
                    cells.append((t, c, v))
    return cells


def set_read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def set_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.mark.slow
def test_a_copied_project_reports_compares_promotes_and_serves_from_the_copy(
        tmp_path, monkeypatch, tokenized, _mlflow_template):
    orig, copy = tmp_path / "orig", tmp_path / "elsewhere" / "copy"
    orig.mkdir()
    monkeypatch.chdir(orig)
    shutil.copyfile(_mlflow_template, orig / "mlflow.db")
    # By its absolute path here; the copy is used through the default `sqlite:///mlflow.db`
    # (MLflow keeps one engine per URI in a process: a relative URI opened here would stay
    # open on the original's file after the chdir).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{orig / 'mlflow.db'}")
    monkeypatch.setenv("PHI1_EXPERIMENT", "phi1-test")
    Path("params.yaml").write_text("register:\n  model_name: phi1\n")

    # A small finished project: a data stage with an input, a training run that logs its
    # model, that model registered and promoted to champion.
    Path("data.txt").write_text("x\n")
    with stage_run("ingest", inputs=["data.txt"]):
        mlflow.log_metric("n_kept", 1)
        mlflow.log_text("kept", "kept.txt")
    pretrain.run(pretrain_cfg(max_steps=2, eval_every=2, checkpoint_every=2, log_model=True),
                 tokens=tokenized / "data/tokens/pretrain", tokenizer=tokenized / "tokenizer", **OUTS)
    register_stage(RegisterConfig(model_name="phi1", checkpoint="checkpoints/base", base_model_name=None,
                                  base_checkpoint=None),
                   "metrics/register.json", "params.yaml", "dvc.lock", None, None, None, None)
    res = CliRunner().invoke(app, ["promote"])
    assert res.exit_code == 0 and "phi1 v1 is now champion" in res.output, res.output
    cells = store_cells(orig / "mlflow.db")
    assert any(str(orig) in v for _, _, v in cells)  # the store holds absolute paths: what this test is about

    # Copy it elsewhere; the original moves away (so a write through an old path would
    # recreate it) and is read-only.
    shutil.copytree(orig, copy, symlinks=True)
    moved = tmp_path / "orig-moved"
    orig.rename(moved)
    set_read_only(moved)
    before = tree_digest(moved)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    try:
        res = CliRunner().invoke(app, ["report", "--out", "reports/report"])  # reads the registry only
        assert res.exit_code == 0, res.output
        assert "champion" in (copy / "reports/report/index.html").read_text()
        res = CliRunner().invoke(app, ["compare", "--limit", "5"])  # the first to open the store: rebases it
        assert res.exit_code == 0 and "ingest" in res.output, res.output
        res = CliRunner().invoke(app, ["promote", "--version", "1"])
        assert res.exit_code == 0 and "phi1 v1 is now champion" in res.output, res.output
        model = mlflow.pyfunc.load_model("models:/phi1@champion")
        assert isinstance(model.predict(["def add(a, b):"], params={"max_new_tokens": 2})[0], str)
        with stage_run("ingest", inputs=["data.txt"]) as run:  # a new run writes into the copy
            mlflow.log_text("again", "kept.txt")
        assert (copy / "mlruns").is_dir() and any((copy / "mlruns").rglob(f"{run.info.run_id}/artifacts/kept.txt"))
    finally:
        set_writable(moved)
    assert not orig.exists()  # nothing was written through an old path
    assert tree_digest(moved) == before
    cells = store_cells(copy / "mlflow.db")
    assert not [c for c in cells if str(orig) in c[2]], [c for c in cells if str(orig) in c[2]][:5]
    with sqlite3.connect(copy / "mlflow.db") as con:
        assert {v for (v,) in con.execute("SELECT value FROM experiment_tags WHERE key = ?", (STORE_DIR_TAG,))} == {
            str(copy)}
    assert rebase_store() == {}  # done once: the next command finds nothing to move
