"""Tokens/s and MFU of the phi1 training loop on a GPU: phi-1 and phi-1-small, bf16, seq 2048.

    python benchmarks/gpu_mfu.py                                  # both presets, sdpa (+ flash-attn if installed)
    python benchmarks/gpu_mfu.py --preset phi-1 --micro-batch 8 --steps 40 --compile
    python benchmarks/gpu_mfu.py --preset tiny --seq-len 64 --vocab 512 --steps 6 --micro-batch 2   # CPU smoke run

Needs only torch, transformers and accelerate (plus numpy and pyyaml, which they bring):
it runs `phi1.engines.training.loop.train` from this checkout's src/ without installing phi1, on
random token ids (MFU does not depend on the data). Nothing is logged to MLflow.

MFU = (6N + 12*L*d*T) * tokens/s / peak FLOP/s (PaLM's accounting, see
`phi1.engines.training.model_shapes.flops_per_token`); peak: `--peak-flops`, else looked up from the GPU
name (H100 SXM 989e12 dense bf16, A100 312e12). Each configuration runs `--steps`
optimizer steps; the first `--warmup` are not timed (allocator warm-up, compile).
Anchors: phi-1 ~50% on A100 (paper), FlashAttention-2 60-72% for GPT-3 1.3B-2.7B on A100,
llm-foundry 42% for 1.3B on H100; target on H100: >= 45%.
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from phi1.config import PretrainConfig  # noqa: E402
from phi1.engines.training.data import TokenShards  # noqa: E402
from phi1.engines.training.loop import make_accelerator, train  # noqa: E402
from phi1.engines.training.model_shapes import build_config, flops_per_token, peak_flops  # noqa: E402
from phi1.engines.training.track import RunLog  # noqa: E402


def random_tokens(folder: Path, rows: int, seq_len: int, vocab: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", rows), ("val", 8)):
        np.save(folder / f"{split}-00000.npy", rng.integers(1, vocab, (n, seq_len), dtype=np.uint16))
        splits[split] = {"rows": n, "shards": [{"file": f"{split}-00000.npy", "rows": n}]}
    (folder / "meta.json").write_text(json.dumps({"seq_len": seq_len, "vocab_size": vocab, "eos_token_id": 0,
                                                  "has_mask": False, "splits": splits}))


def run_one(args, preset: str, attention: str, work: Path) -> dict:
    from transformers import AutoModelForCausalLM

    micro = args.micro_batch or (4 if preset == "phi-1" else 8)
    cfg = PretrainConfig(
        preset=preset, attention=attention, max_steps=args.steps, micro_batch_size=micro,
        global_batch_size=micro * args.accum, warmup_steps=min(10, args.steps), dropout=0.0,
        mixed_precision="auto", compile=args.compile, gradient_checkpointing=args.grad_ckpt,
        eval_every=10**9, eval_batches=1, checkpoint_every=10**9, log_every=1,
        peak_flops=args.peak_flops, log_model=False, log_system_metrics=False,
    )
    folder = work / f"tokens-{args.seq_len}-{args.vocab}"
    if not folder.exists():
        random_tokens(folder, rows=args.steps * cfg.global_batch_size + 8, seq_len=args.seq_len, vocab=args.vocab)
    data, val = TokenShards(folder, "train"), TokenShards(folder, "val")
    accelerator = make_accelerator(cfg)
    torch.manual_seed(0)
    config = build_config(preset, args.vocab, args.seq_len, 0.0, eos_token_id=0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    state = Path(tempfile.mkdtemp(dir=work))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    net, result = train(cfg, accelerator, model, data, val, state, RunLog(state), progress=False,
                        save_checkpoints=False)
    # The Accelerator holds the model and optimizer: release them before the next configuration.
    accelerator.free_memory()
    del net, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with open(state / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[args.warmup:]
    shutil.rmtree(state, ignore_errors=True)
    tps = statistics.median(float(r["tokens_per_s"]) for r in rows)
    peak = args.peak_flops or (peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None)
    fpt = flops_per_token(config, args.seq_len)
    return {
        "preset": preset, "attention": attention, "micro_batch": micro, "accum": args.accum,
        "params_M": round(result.n_params / 1e6, 1), "precision": accelerator.mixed_precision,
        "tokens_per_s": round(tps), "tflops": round(fpt * tps / 1e12, 1),
        "mfu": round(fpt * tps / peak, 4) if peak else None,
        "peak_mem_GiB": round(float(rows[-1]["peak_mem_mb"]) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", help="phi-1, phi-1-small or tiny; repeatable (default: both phi-1s)")
    ap.add_argument("--attention", action="append", help="sdpa, flash_attention_2, eager; repeatable "
                    "(default: sdpa, plus flash_attention_2 when flash-attn is installed)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=51200)
    ap.add_argument("--micro-batch", type=int, default=None, help="default: 4 for phi-1, 8 otherwise")
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="logged steps left out of the median")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--peak-flops", type=float, default=None)
    args = ap.parse_args()
    if args.warmup >= args.steps:
        ap.error("--warmup must be below --steps")

    presets = args.preset or ["phi-1-small", "phi-1"]
    attentions = args.attention or (["sdpa"] + (["flash_attention_2"] if torch.cuda.is_available()
                                                 and importlib.util.find_spec("flash_attn") else []))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}; torch {torch.__version__}; seq {args.seq_len}; vocab {args.vocab}; "
          f"{args.steps} steps ({args.warmup} untimed)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="phi1-mfu-"))
    results = []
    for preset in presets:
        for attention in attentions:
            try:
                r = run_one(args, preset, attention, work)
            except torch.cuda.OutOfMemoryError:
                r = {"preset": preset, "attention": attention, "error": "out of memory (lower --micro-batch)"}
                torch.cuda.empty_cache()
            results.append(r)
            print(json.dumps(r), flush=True)
    print("\n| preset | attention | micro x accum | precision | tokens/s | TFLOP/s | MFU | peak mem GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "error" in r:
            print(f"| {r['preset']} | {r['attention']} | {r['error']} | | | | | |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"| {r['preset']} | {r['attention']} | {r['micro_batch']} x {r['accum']} | {r['precision']} | "
              f"{r['tokens_per_s']} | {r['tflops']} | {mfu} | {r['peak_mem_GiB']} |")


if __name__ == "__main__":
    main()
