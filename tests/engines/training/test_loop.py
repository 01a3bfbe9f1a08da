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
from tests.training_fixtures import TINY_MODEL, pretrain_cfg


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


def _launch_two_nodes(shape: dict, config: str, tokenized, tag: str):
    """`accelerate launch` machine ranks 0 and 1 of config `shape` (written to `config`) on
    this host, CPU only; (processes, [(stdout, stderr)]) once both ended (killed after 300 s)."""
    Path(config).write_text(yaml.safe_dump(shape))
    nodes = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
                               "--machine_rank", str(rank), "-m", "phi1.cli", *_cli(tokenized, tag)],
                              env={**_env(), "ACCELERATE_USE_CPU": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        outs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    return nodes, outs


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


@pytest.mark.long  # 14 s on an idle 2-core machine; make test-cluster runs it with the other scale-out checks
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
    nodes, outs = _launch_two_nodes(shape, "multinode.yaml", tokenized, "nodes")
    assert [n.returncode for n in nodes] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    two = json.loads(Path("metrics-nodes.json").read_text())  # written by the main process (rank 0)
    assert two["steps"] == 6 and two["tokens"] == one["tokens"]
    assert two["final_val_loss"] == pytest.approx(one["final_val_loss"], abs=1e-3)
    rows = lambda f: [float(r.split(",")[2]) for r in Path(f).read_text().splitlines()[1:]]  # noqa: E731
    assert rows("plots-nodes/train.csv") == pytest.approx(rows("plots-one/train.csv"), abs=1e-3)
    assert {p.name for p in Path("state-nodes/checkpoint-00000006").glob("random_states_*")} == {
        "random_states_0.pkl", "random_states_1.pkl"}


def _fsdp_env(config: Path) -> dict[str, str]:
    """The FSDP variables `accelerate launch --config_file <config>` gives its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "phi1.cli", "pretrain"])
    env = prepare_multi_gpu_env(_validate_launch_command(args)[0])
    return {k: v for k, v in env.items() if k.startswith("FSDP_") or k == "ACCELERATE_USE_FSDP"}


def test_fsdp_multinode_config_wraps_each_decoder_layer_on_cpu(monkeypatch):
    """What of FSDP runs on CPU: the presets' fsdp-multinode.yaml, read by Accelerate's
    launcher and FSDP plugin, wraps phi1's model with one FSDP unit per decoder layer
    (torch FSDP over a 1-process gloo group), and the wrapped model computes the same loss.
    The shipped fsdp_sync_module_states is refused by Accelerate on CPU, so it is off here."""
    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from transformers import AutoModelForCausalLM

    from phi1.engines.training.model_shapes import build_config

    env = _fsdp_env(REPO / "pipelines/phi-1/accelerate/fsdp-multinode.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_SYNC_MODULE_STATES"] == "true"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeError, match="sync_module_states=True` is not supported on cpu"):
        FullyShardedDataParallelPlugin()
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1 and plugin.sharding_strategy.name == "FULL_SHARD" and plugin.use_orig_params

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_config("tiny", 512, 64, overrides=TINY_MODEL))
    ids = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(1))
    plain = float(model(input_ids=ids, labels=ids).loss)
    plugin.set_auto_wrap_policy(model)
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        wrapped = FSDP(model, sharding_strategy=plugin.sharding_strategy, auto_wrap_policy=plugin.auto_wrap_policy,
                       use_orig_params=plugin.use_orig_params, device_id=torch.device("cpu"))
        units = [m for m in wrapped.modules() if isinstance(m, FSDP)]
        assert len(units) == 1 + TINY_MODEL["num_hidden_layers"]  # the root + one per PhiDecoderLayer
        assert {type(u.module).__name__ for u in units[1:]} == {env["FSDP_TRANSFORMER_CLS_TO_WRAP"]}
        loss = wrapped(input_ids=ids, labels=ids).loss
        loss.backward()
        assert float(loss) == pytest.approx(plain, abs=1e-6)
    finally:
        dist.destroy_process_group()


def test_an_fsdp_launch_that_accelerate_would_run_unsharded_is_refused(monkeypatch):
    """On CPU Accelerate ignores an FSDP config and trains plain data parallel: refused."""
    from phi1.engines.training.loop import make_accelerator
    from phi1.errors import Phi1Error

    env = _fsdp_env(REPO / "pipelines/phi-1/accelerate/fsdp-multinode.yaml")
    for k, v in {**env, "FSDP_SYNC_MODULE_STATES": "false", "FSDP_CPU_RAM_EFFICIENT_LOADING": "false"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(Phi1Error, match=r"asks for FSDP but Accelerate runs NO \(Accelerate shards only on GPUs\)"):
        make_accelerator(pretrain_cfg(mixed_precision="no"))


@pytest.mark.long
def test_two_nodes_on_one_host_with_the_presets_fsdp_multinode_config(workdir, tokenized):
    """fsdp-multinode.yaml as two CPU "nodes" (machine_rank 0/1 on 127.0.0.1, gloo): the
    processes meet, then refuse, because Accelerate would train them unsharded."""
    cfg = pretrain_cfg(max_steps=2, dropout=0.0)
    Path("params.yaml").write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
    shape = yaml.safe_load((REPO / "pipelines/phi-1/accelerate/fsdp-multinode.yaml").read_text())
    assert (shape["distributed_type"], shape["num_machines"]) == ("FSDP", 2)
    shape.update(num_processes=2, main_process_ip="127.0.0.1", main_process_port=_free_port(),
                 mixed_precision="no", use_cpu=True, gpu_ids=None)
    shape["fsdp_config"].update(fsdp_sync_module_states=False, fsdp_cpu_ram_efficient_loading=False)
    nodes, outs = _launch_two_nodes(shape, "fsdp.yaml", tokenized, "fsdp")
    for node, (_, err) in zip(nodes, outs):
        assert node.returncode != 0
        assert "the launch config asks for FSDP but Accelerate runs MULTI_CPU" in err, err[-2000:]
    assert not Path("state-fsdp").exists() and not Path("out-fsdp").exists()


def _fsdp_losses(rank: int, world: int, port: int, env: dict, tokens: str, out: str) -> None:
    """Train the tiny model 4 steps on phi1's global batches, split over `world` processes
    as the loop splits them (one micro-batch per process, loss over the global target
    count / world), FSDP-wrapped by the plugin Accelerate builds from `env` when world > 1;
    rank 0 writes the global loss of each step to `out`."""
    import torch.distributed as dist
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from transformers import AutoModelForCausalLM

    from phi1.engines.training.data import BatchOrder, TokenShards
    from phi1.engines.training.model_shapes import build_config

    if world > 1:  # a spawned process: its own environment (the test process's must not get FSDP's)
        os.environ.update(env)
    torch.set_num_threads(1)
    data = TokenShards(tokens, "train")
    order = BatchOrder(len(data), 8, seed=1234)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(build_config("tiny", 512, data.seq_len, overrides=TINY_MODEL))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        plugin = FullyShardedDataParallelPlugin()
        plugin.set_auto_wrap_policy(model)
        model = FSDP(model, sharding_strategy=plugin.sharding_strategy, auto_wrap_policy=plugin.auto_wrap_policy,
                     use_orig_params=plugin.use_orig_params, device_id=torch.device("cpu"))
        assert model.sharding_strategy.name == "FULL_SHARD"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(4):
        rows = order.global_batch_rows(step)
        local = BatchOrder.local_rows(rows, 1, world, rank)[0]
        ids = torch.from_numpy(data.tokens(local))
        norm = int((data.mask(rows)[:, 1:] >= 1).sum()) / world
        loss = model(input_ids=ids, labels=ids, num_items_in_batch=norm).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        total = loss.detach().clone()
        if world > 1:
            dist.all_reduce(total)
        losses.append(float(total) / world)
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps(losses))


@pytest.mark.long
def test_fsdp_on_cpu_two_processes_reach_one_process_loss(workdir, tokenized):
    """FSDP itself runs on CPU: two gloo processes, fully sharded with the unit per decoder
    layer the presets' fsdp-multinode.yaml gives (through Accelerate's launcher and plugin),
    train phi1's global batches to one unsharded process's loss. Accelerate cannot drive
    this (see the test above), so the four steps are written out here."""
    import torch.multiprocessing as mp

    env = _fsdp_env(REPO / "pipelines/phi-1/accelerate/fsdp-multinode.yaml")
    env.update(FSDP_SYNC_MODULE_STATES="false", FSDP_CPU_RAM_EFFICIENT_LOADING="false")
    tokens = str(tokenized / "data/tokens/pretrain")
    _fsdp_losses(0, 1, 0, env, tokens, "one.json")
    mp.spawn(_fsdp_losses, args=(2, _free_port(), env, tokens, "two.json"), nprocs=2, join=True)
    one, two = (json.loads(Path(f).read_text()) for f in ("one.json", "two.json"))
    assert len(one) == len(two) == 4 and one[0] != one[-1]
    assert two == pytest.approx(one, abs=1e-3)
