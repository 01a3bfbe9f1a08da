import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from phi1.config import PretrainConfig, to_dict
from phi1 import pretrain
from phi1.engines.training.loop import checkpoints, lr_factor
from tests.conftest import REPO
from tests.training_fixtures import pretrain_cfg


def test_lr_warmup_then_linear_or_cosine_decay():
    cfg = PretrainConfig(max_steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-4)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    cos = PretrainConfig(max_steps=110, warmup_steps=10, schedule="cosine")
    assert lr_factor(60, cos) == pytest.approx(0.5) and lr_factor(35, cos) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.25)))


def _paths(tokenized: Path, tag: str) -> dict:
    return dict(tokens=tokenized / "data/tokens/pretrain", tokenizer=tokenized / "tokenizer", out=Path(f"out-{tag}"),
                state_dir=Path(f"state-{tag}"), metrics_path=Path(f"metrics-{tag}.json"), plots_dir=Path(f"plots-{tag}"))


def _cli(tokenized: Path, tag: str) -> list[str]:
    p = _paths(tokenized, tag)
    return ["pretrain", "-p", "params.yaml", "--tokens", str(p["tokens"]), "--tokenizer", str(p["tokenizer"]),
            "--out", str(p["out"]), "--state", str(p["state_dir"]), "--metrics", str(p["metrics_path"]),
            "--plots", str(p["plots_dir"])]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_rerun_reaches_the_uninterrupted_weights(workdir, tokenized):
    """Kill -9 after the first checkpoint, run the same command again: same final weights,
    bit for bit, as a run never interrupted (CPU, fixed seed, dropout 0.1, accumulation 2)."""
    cfg = pretrain_cfg(max_steps=40, checkpoint_every=8, eval_every=8, micro_batch_size=4, global_batch_size=8,
                       dropout=0.1, log_every=5)
    Path("params.yaml").write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
    pretrain.run(cfg, **_paths(tokenized, "ref"))

    cmd = [sys.executable, "-m", "phi1.cli", *_cli(tokenized, "run")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not checkpoints(Path("state-run")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoints(Path("state-run"))[-1][0]
    assert 8 <= killed_at < 40 and not Path("out-run").exists()

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"(step {killed_at})" in done.stdout + done.stderr
    metrics = json.loads(Path("metrics-run.json").read_text())
    # the resume is said above and tagged in MLflow; the DVC metrics are those of any run
    assert "resumed_from" not in metrics and metrics["steps"] == 40

    ref, got = _weights(Path("out-ref")), _weights(Path("out-run"))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    # The logged curves match too: the resumed run's rows replace the killed run's tail.
    ref_csv = Path("plots-ref/train.csv").read_text().splitlines()
    got_csv = Path("plots-run/train.csv").read_text().splitlines()
    assert [r.split(",")[:5] for r in ref_csv] == [r.split(",")[:5] for r in got_csv]
    assert Path("plots-ref/val.csv").read_text() == Path("plots-run/val.csv").read_text()


def test_keeps_last_k_and_best_and_exports_best(workdir, tokenized):
    # A learning rate warming up to 1.0 without clipping: the loss climbs in the last steps.
    cfg = pretrain_cfg(max_steps=12, checkpoint_every=3, eval_every=3, keep_last=1, lr=1.0, warmup_steps=12,
                       grad_clip=0.0, export="best", dropout=0.0)
    m = pretrain.run(cfg, **_paths(tokenized, "a"))
    kept = [s for s, _ in checkpoints(Path("state-a"))]
    with open("plots-a/val.csv", newline="") as fh:
        val = {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(fh)}
    best = min((s for s in val if s and s % 3 == 0), key=val.get)
    assert m["best_step"] == best < 12 and m["exported_step"] == best
    assert kept == sorted({best, 12})
    exported, at_best = _weights(Path("out-a")), load_file(f"state-a/checkpoint-{best:08d}/model.safetensors")
    assert all(torch.equal(exported[k], at_best[k.removeprefix("module.")]) for k in exported)


def test_changed_settings_restart_and_logging_settings_resume(workdir, tokenized, capfd):
    cfg = pretrain_cfg(max_steps=4)
    pretrain.run(cfg, **_paths(tokenized, "b"))
    # Only logging/keeping changed: the finished state is reused, nothing retrains.
    again = pretrain.run(pretrain_cfg(max_steps=4, log_every=1, keep_last=5), **_paths(tokenized, "b"))
    assert again["resumed_from"] == 4 and again["tokens"] == 4 * 8 * 64
    # A setting that changes the weights: the old state is discarded with a warning.
    fresh = pretrain.run(pretrain_cfg(max_steps=4, lr=1e-3), **_paths(tokenized, "b"))
    assert "resumed_from" not in fresh
    assert "holds a run with other settings (config.lr); starting over" in capfd.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(workdir, tokenized):
    """Two CPU processes under `accelerate launch` train the same global batches as one
    process (each row once per epoch, split between the processes): same losses up to
    float reduction order. (accelerate 1.x starts several CPU processes only through
    mpirun with `--cpu`; `ACCELERATE_USE_CPU=1 ... --multi_gpu` starts them with gloo.)"""
    cfg = pretrain_cfg(max_steps=6, micro_batch_size=4, global_batch_size=8, checkpoint_every=3, eval_every=3,
                       log_every=1, dropout=0.0)
    Path("params.yaml").write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
    one = pretrain.run(cfg, **_paths(tokenized, "one"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "phi1.cli", *_cli(tokenized, "two")]
    done = subprocess.run(cmd, env={**_env(), "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(Path("metrics-two.json").read_text())
    assert two["steps"] == 6 and two["tokens"] == one["tokens"]
    assert two["first_val_loss"] == pytest.approx(one["first_val_loss"], rel=1e-6)
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], rel=1e-3)
    rows = lambda f: [float(r.split(",")[2]) for r in Path(f).read_text().splitlines()[1:]]  # noqa: E731
    assert rows("plots-two/train.csv") == pytest.approx(rows("plots-one/train.csv"), rel=1e-3)
    # Each process wrote its own RNG state into the checkpoint.
    assert {p.name for p in Path("state-two/checkpoint-00000006").glob("random_states_*")} == {
        "random_states_0.pkl", "random_states_1.pkl"}


@pytest.mark.slow
def test_two_nodes_on_one_host_with_the_presets_multinode_config(workdir, tokenized):
    """The repo's multi-node config shape (pipelines/phi-1/accelerate/ddp-multinode.yaml),
    run as two "nodes" on this host: two `accelerate launch` processes, machine_rank 0
    and 1, rendezvous on 127.0.0.1 over gloo (CPU; no GPU here, so bf16 -> no and
    use_cpu). They train the global batches one process trains, to the same loss."""
    cfg = pretrain_cfg(max_steps=6, micro_batch_size=4, global_batch_size=8, checkpoint_every=3, eval_every=3,
                       log_every=1, dropout=0.0)
    Path("params.yaml").write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
    one = pretrain.run(cfg, **_paths(tokenized, "one"))
    shape = yaml.safe_load((REPO / "pipelines/phi-1/accelerate/ddp-multinode.yaml").read_text())
    assert (shape["distributed_type"], shape["num_machines"], shape["rdzv_backend"]) == ("MULTI_GPU", 2, "static")
    shape.update(num_processes=2, main_process_ip="127.0.0.1", main_process_port=_free_port(),
                 mixed_precision="no", use_cpu=True, gpu_ids=None)
    Path("multinode.yaml").write_text(yaml.safe_dump(shape))
    nodes = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file", "multinode.yaml",
                               "--machine_rank", str(rank), "-m", "phi1.cli", *_cli(tokenized, "nodes")],
                              env={**_env(), "ACCELERATE_USE_CPU": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        outs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [n.returncode for n in nodes] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    two = json.loads(Path("metrics-nodes.json").read_text())  # written by the main process (rank 0)
    assert two["steps"] == 6 and two["tokens"] == one["tokens"]
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], abs=1e-3)
    rows = lambda f: [float(r.split(",")[2]) for r in Path(f).read_text().splitlines()[1:]]  # noqa: E731
    assert rows("plots-nodes/train.csv") == pytest.approx(rows("plots-one/train.csv"), abs=1e-3)
    assert {p.name for p in Path("state-nodes/checkpoint-00000006").glob("random_states_*")} == {
        "random_states_0.pkl", "random_states_1.pkl"}
