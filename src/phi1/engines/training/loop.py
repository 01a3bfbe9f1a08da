"""The Accelerate training loop shared by `pretrain` and `finetune`.

    accelerator = make_accelerator(cfg)
    set_seed(cfg.seed); model = ...                     # built after seeding
    result = train(cfg, accelerator, model, train_data, val_data, state_dir, log, ...)

What it does, in the paper's terms: AdamW (no weight decay on biases and norms); linear
warmup then linear (the paper) or cosine decay; gradient accumulation up to
`global_batch_size`; gradient clipping; mixed precision through Accelerate; the
validation loss at step 0, every `eval_every` steps and at the end; tokens/s and MFU.

Checkpoints and exact resume: every `checkpoint_every` steps (and at the last step)
`accelerator.save_state` writes model, optimizer, scheduler, every process's RNG state
and our `TrainerState` (step, tokens, losses) into `<state_dir>/checkpoint-<step>`, via a
temporary folder renamed into place, so a kill mid-save leaves the previous checkpoint
intact. The data position needs no saving: the rows of step s are a pure function of
(seed, s) (see `phi1.engines.training.data.BatchOrder`). Rerunning the same command loads the last
checkpoint and continues; on CPU with a fixed seed the weights then equal those of an
uninterrupted run bit for bit (tests/train/test_loop.py). A state folder written under a
different config or data (its `run.json` fingerprint differs) is discarded with a
warning. The last `keep_last` checkpoints and the best one by validation loss are kept.

Loss normalisation: each micro-batch's summed token loss is divided by the number of
target tokens in the whole global batch (known up front from the masks), so accumulation
and data parallelism give exactly the token-mean loss of the global batch, also when
finetuning masks out prompt tokens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phi1.errors import Phi1Error
from phi1.engines.progress import progress_bar
from phi1.engines.training.data import MASK_PROMPT, BatchOrder, TokenShards
from phi1.engines.training.model_shapes import flops_per_token, peak_flops
from phi1.engines.training.track import RunLog

CKPT_RE = re.compile(r"^checkpoint-(\d{8})$")

# Config keys that change what is logged or kept, not the trained weights: a state folder
# written with other values of these still resumes.
NON_TRAJECTORY = {
    "log_every", "keep_last", "log_model", "log_system_metrics", "eval_every", "eval_batches",
    "checkpoint_every", "export", "peak_flops",
    "launch",  # the launcher string; the world size it gives is fingerprinted on its own
}


def mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(cfg):
    """The run's Accelerator, after checking the launch really gave the processes asked for.

    On CPU, `accelerate launch --cpu --num_processes N` starts one process unless it goes
    through mpirun (accelerate 1.x); `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
    --num_processes N` starts N gloo processes. `--multi_gpu` without a GPU and without
    ACCELERATE_USE_CPU starts N processes that each think they are alone, which would
    train N copies over the same files: refused. An FSDP config on CPU is refused too:
    Accelerate 1.x shards only on GPUs and other accelerators; on CPU (gloo) it ignores
    the FSDP settings and trains unsharded DDP (an FSDP config with
    fsdp_sync_module_states fails earlier, in Accelerate itself)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    accelerator = Accelerator(
        mixed_precision=mixed_precision(cfg.mixed_precision),
        dynamo_backend="inductor" if cfg.compile else "no",
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise Phi1Error(
            f"launched {launched} processes but Accelerate sees {accelerator.num_processes}; without a GPU use "
            "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`"
        )
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and accelerator.distributed_type != DistributedType.FSDP:
        raise Phi1Error(
            f"the launch config asks for FSDP but Accelerate runs {accelerator.distributed_type.value} "
            "(Accelerate shards only on GPUs); on CPU use a ddp-*.yaml config"
        )
    if "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ and accelerator.is_main_process:
        print("warning: `accelerate launch --cpu --num_processes N` runs ONE process without mpirun; for N CPU "
              "processes use `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`",
              file=sys.stderr, flush=True)
    return accelerator


def lr_factor(step: int, cfg) -> float:
    """Multiplier of cfg.lr used by optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr / cfg.lr if cfg.lr else 0.0
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and layer-norm weights (1-d) are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainerState:
    """Loop counters saved with each checkpoint (registered with Accelerate)."""

    def __init__(self):
        self.step = 0
        self.tokens = 0
        self.first_val: float | None = None
        self.last_val: float | None = None
        self.best_val: float | None = None
        self.best_step: int | None = None
        # The train-loss log window open at a checkpoint, so a resumed run logs what an
        # uninterrupted one does (sum of per-step losses, averaged over processes).
        self.window_loss = 0.0
        self.window_steps = 0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, d: dict) -> None:
        vars(self).update(d)


@dataclass
class LoopResult:
    steps: int
    resumed_from: int | None
    first_val_loss: float | None
    final_val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    exported_step: int
    tokens: int
    seconds: float
    tokens_per_s: float
    mfu: float | None
    n_params: int
    peak_mem_mb: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def fingerprint(cfg, extra: dict[str, Any]) -> dict[str, Any]:
    """What must match for a state folder to be resumed: trajectory config + data + world."""
    from phi1.config import to_dict

    d = {k: v for k, v in to_dict(cfg).items() if k not in NON_TRAJECTORY}
    return {"config": d, **extra}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def checkpoints(state_dir: Path) -> list[tuple[int, Path]]:
    if not state_dir.is_dir():
        return []
    out = []
    for p in state_dir.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def prepare_state_dir(state_dir: Path, fp: dict, accelerator) -> Path | None:
    """Check the state folder against the run's fingerprint; return the checkpoint to resume
    from (None: a fresh start). Main process only touches the disk."""
    run_json = state_dir / "run.json"
    latest = None
    if accelerator.is_main_process:
        state_dir.mkdir(parents=True, exist_ok=True)
        for p in state_dir.glob(".tmp-checkpoint-*"):  # a save cut short by a kill
            shutil.rmtree(p, ignore_errors=True)
        old = json.loads(run_json.read_text()) if run_json.is_file() else None
        if old is not None and old.get("digest") != _digest(fp):
            changed = _changed_keys(old.get("fingerprint", {}), fp)
            print(f"warning: {state_dir} holds a run with other settings ({', '.join(changed) or 'unknown'}); "
                  "starting over", file=sys.stderr, flush=True)
            for p in state_dir.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            old = None
        if old is None:
            for _, p in checkpoints(state_dir):
                shutil.rmtree(p)
            run_json.write_text(json.dumps({"digest": _digest(fp), "fingerprint": fp}, indent=2, default=str))
    accelerator.wait_for_everyone()
    found = checkpoints(state_dir)
    if found:
        latest = found[-1][1]
    return latest


def _changed_keys(old: dict, new: dict) -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{k}.{x}" for x in _changed_keys(a, b)]
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            keys.append(k)
    return keys


def train(
    cfg,
    accelerator,
    model,
    train_data: TokenShards,
    val_data: TokenShards,
    state_dir: str | Path,
    log: RunLog | None = None,
    *,
    min_mask: int = MASK_PROMPT,
    fingerprint_extra: dict[str, Any] | None = None,
    progress: bool = True,
    save_checkpoints: bool = True,
) -> tuple[Any, LoopResult]:
    """Train `model` (built, not yet prepared) and return (unwrapped model with the exported
    weights, result). `min_mask`: a token is a target when its mask is at least this
    (MASK_SOLUTION: solution tokens only). `save_checkpoints=False` (benchmarks) writes
    no checkpoint at all, so the run cannot be resumed."""
    state_dir = Path(state_dir)
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.micro_batch_size * world
    if cfg.global_batch_size % per_step:
        raise Phi1Error(
            f"global_batch_size {cfg.global_batch_size} is not a multiple of micro_batch_size "
            f"{cfg.micro_batch_size} x {world} processes"
        )
    accum = cfg.global_batch_size // per_step
    seq_len = train_data.seq_len
    fp = fingerprint(cfg, {**(fingerprint_extra or {}), "world_size": world,
                           "mixed_precision": accelerator.mixed_precision})
    resume_from = prepare_state_dir(state_dir, fp, accelerator)

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    n_params = sum(p.numel() for p in model.parameters())
    model.to(accelerator.device)  # before the optimizer: fused AdamW checks the params' device
    fused = torch.cuda.is_available()
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused,
    )
    # Not prepared: Accelerate's scheduler wrapper steps once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainerState()
    accelerator.register_for_checkpointing(scheduler, state)
    resumed_from = None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        resumed_from = state.step
        accelerator.print(f"resumed from {resume_from} (step {state.step})")
    if log is None:
        log = RunLog(state_dir, enabled=False)
    log.begin(resumed_from)

    order = BatchOrder(len(train_data), cfg.global_batch_size, cfg.seed)
    device = accelerator.device
    fpt = flops_per_token(accelerator.unwrap_model(model).config, seq_len)
    peak = cfg.peak_flops or (peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None)

    def batch(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.from_numpy(train_data.tokens(rows))
        labels = ids.clone()
        labels[torch.from_numpy(train_data.mask(rows)) < min_mask] = -100
        return ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def n_targets(data: TokenShards, rows: np.ndarray) -> int:
        # HF shifts labels left by one: position 0 is never a target.
        return int((data.mask(rows)[:, 1:] >= min_mask).sum())

    def evaluate() -> float:
        net = accelerator.unwrap_model(model)
        net.eval()
        # The same rows whatever the number of processes, so curves compare across launches.
        n_eval = len(val_data) if cfg.eval_batches is None else min(len(val_data), cfg.eval_batches * cfg.micro_batch_size)
        mine = np.arange(rank, n_eval, world)
        total = torch.zeros(2, dtype=torch.float64, device=device)
        with torch.no_grad():
            for i in range(0, len(mine), cfg.micro_batch_size):
                rows = mine[i:i + cfg.micro_batch_size]
                ids = torch.from_numpy(val_data.tokens(rows)).to(device)
                labels = ids.clone()
                labels[torch.from_numpy(val_data.mask(rows)).to(device) < min_mask] = -100
                out = net(input_ids=ids, labels=labels, num_items_in_batch=1)  # summed loss
                total[0] += out.loss.double()
                total[1] += (labels[:, 1:] != -100).sum()
        total = accelerator.reduce(total, "sum")
        net.train()
        return float(total[0] / total[1].clamp(min=1))

    def record_val(step: int, value: float) -> None:
        state.last_val = value
        if state.first_val is None:
            state.first_val = value
        log.log("val", step, {"val_loss": value})

    def save_checkpoint(step: int) -> None:
        final = state_dir / f"checkpoint-{step:08d}"
        tmp = state_dir / f".tmp-checkpoint-{step:08d}"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps(state.state_dict(), indent=2))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            keep = {s for s, _ in checkpoints(state_dir)[-cfg.keep_last:]}
            if state.best_step is not None:
                keep.add(state.best_step)
            for s, p in checkpoints(state_dir):
                if s not in keep:
                    shutil.rmtree(p, ignore_errors=True)
        accelerator.wait_for_everyone()

    model.train()
    if state.step == 0 and state.first_val is None:
        record_val(0, evaluate())
    t_start = time.perf_counter()
    # steps_window counts the steps in the loss window (it may predate a resume);
    # timed_steps the steps run since t_window (this process's own).
    t_window, timed_steps = time.perf_counter(), 0
    steps_window, loss_window = state.window_steps, torch.tensor(state.window_loss, device=device)
    tokens_per_s, mfu = 0.0, None
    grad_norm = torch.zeros(())
    start_step = state.step
    with progress_bar(cfg.max_steps, "train", enabled=progress and accelerator.is_main_process) as update_bar:
        update_bar(state.step)
        while state.step < cfg.max_steps:
            step = state.step
            rows = order.global_batch_rows(step)
            norm = max(1, n_targets(train_data, rows)) / world  # DDP averages gradients over processes
            local = BatchOrder.local_rows(rows, accum, world, rank)
            step_loss = torch.zeros((), device=device)
            for a in range(accum):
                ids, labels = batch(local[a])
                ctx = accelerator.no_sync(model) if a < accum - 1 else contextlib.nullcontext()
                with ctx:
                    loss = model(input_ids=ids, labels=labels, num_items_in_batch=norm).loss
                    accelerator.backward(loss)
                step_loss += loss.detach()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens += cfg.global_batch_size * seq_len
            loss_window += step_loss
            steps_window += 1
            timed_steps += 1
            update_bar(state.step)

            last = state.step == cfg.max_steps
            if state.step % cfg.log_every == 0 or last:
                mean_loss = float(accelerator.reduce(loss_window, "mean")) / steps_window
                elapsed = time.perf_counter() - t_window
                tokens_per_s = timed_steps * cfg.global_batch_size * seq_len / max(elapsed, 1e-9)
                mfu = fpt * tokens_per_s / (peak * world) if peak else None
                log.log("train", state.step, {
                    "epoch": round(order.epoch_of(state.step), 4), "loss": mean_loss,
                    "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "tokens_per_s": tokens_per_s,
                    "mfu": mfu, "peak_mem_mb": peak_memory_mb(), "tokens": state.tokens,
                })
                update_bar(state.step, f"train (loss {mean_loss:.3f})")
                t_window, timed_steps, steps_window, loss_window = time.perf_counter(), 0, 0, torch.zeros((), device=device)
            ckpt = state.step % cfg.checkpoint_every == 0 or last
            if state.step % cfg.eval_every == 0 or ckpt:
                record_val(state.step, evaluate())
                if state.best_val is None or state.last_val < state.best_val:
                    if ckpt and save_checkpoints:  # "best" names a checkpoint we keep
                        state.best_val, state.best_step = state.last_val, state.step
            if ckpt and save_checkpoints:
                # Store the open log window as a plain number and go on from that number, as a
                # run resumed from this checkpoint will.
                state.window_loss = float(accelerator.reduce(loss_window, "mean"))
                state.window_steps = steps_window
                loss_window = torch.tensor(state.window_loss, device=device)
                save_checkpoint(state.step)
    seconds = time.perf_counter() - t_start

    net = accelerator.unwrap_model(model, keep_torch_compile=False)
    exported = state.step
    if cfg.export == "best" and state.best_step is not None and state.best_step != state.step:
        load_weights(net, state_dir / f"checkpoint-{state.best_step:08d}")
        exported = state.best_step
    trained = state.step - start_step
    result = LoopResult(
        steps=state.step, resumed_from=resumed_from, first_val_loss=state.first_val,
        final_val_loss=state.last_val, best_val_loss=state.best_val, best_step=state.best_step,
        exported_step=exported, tokens=state.tokens, seconds=round(seconds, 3),
        tokens_per_s=(trained * cfg.global_batch_size * seq_len / seconds) if trained and seconds else 0.0,
        mfu=None, n_params=n_params, peak_mem_mb=peak_memory_mb(),
    )
    if peak and result.tokens_per_s:
        result.mfu = fpt * result.tokens_per_s / (peak * world)
    return net, result


def load_weights(model, checkpoint: Path) -> None:
    """Load a checkpoint's model weights (as saved by save_state) into an unwrapped model."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors"))
    clean = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        clean[k] = v
    missing, unexpected = model.load_state_dict(clean, strict=False)
    # lm_head may share storage with nothing (untied) but safetensors drops exact aliases.
    if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
        raise Phi1Error(f"{checkpoint}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
