"""What `pretrain` and `finetune` share around the loop: data, MLflow run, export, metrics.

Not a stage itself: `phi1.pretrain.stage.run` and `phi1.finetune.stage.run` call
`run_training` with their model factory. Under `accelerate launch` every process runs
it; only the main process talks to MLflow and writes outputs.

Outputs (each written atomically): the model dir (`save_pretrained` of model and
tokenizer: a plain HF directory), `metrics/<stage>.json`, and `plots/<stage>/` with
`train.csv`, `val.csv` (read by `dvc plots`) and `loss.png` (logged to MLflow too).
"""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from pathlib import Path
from typing import Any, Callable

from phi1.errors import Phi1Error
from phi1.io import check_output, outputs
from phi1.tracking import log_folder, split_run_figures
from phi1.engines.training.data import TokenShards
from phi1.engines.training.loop import LoopResult, make_accelerator, train
from phi1.engines.training.model_shapes import resolve_attention
from phi1.engines.training.track import RunLog


CHECKPOINT_TAG = "phi1.checkpoint.md5"
"""Tag of the logged model (and its training run) holding `phi1.tracking.content_hash` of
the checkpoint folder it was saved with: how `register` finds the model a training run
logged for a checkpoint (phi1.engines.model_registry.CHECKPOINT_TAG reads the same tag)."""
MODEL_ID_TAG = "phi1.model_id"
"""Tag of the training run: the id of the logged model it produced."""
SERVING_PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers")


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model: explicit because MLflow's inference of them for
    a transformers model asks for torchvision, which generating text does not need; each
    without its local version tag (`torch==2.13.0`, not `2.13.0+cpu`), which names a build
    of one package index and makes the model uninstallable elsewhere. pip then installs the
    host's default build of torch (CUDA on Linux from PyPI); README "Serving" tells how to
    pick the CPU or a GPU build."""
    from importlib.metadata import version

    return [f"{p}=={version(p).split('+')[0]}" for p in SERVING_PACKAGES]


def context_of(model) -> int:
    """The longest sequence (prompt + completion) the model was built for."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    raise Phi1Error(f"{type(cfg).__name__} names no context length (max_position_embeddings)")


def serving_defaults(model, tokenizer) -> int:
    """Bound generation to the model's context and make it greedy by default, in what
    `save_pretrained` writes: generation_config.json gets `max_length` = the context and
    `do_sample` false, tokenizer_config.json `model_max_length` = the context (which the
    text-generation pipeline's left truncation, `handle_long_generation="hole"`, keeps to).
    Returns the context."""
    ctx = context_of(model)
    gen = model.generation_config
    gen.max_length, gen.do_sample = ctx, False
    for key in ("temperature", "top_p", "top_k"):  # sampling settings of a greedy default: none
        setattr(gen, key, None)
    tokenizer.model_max_length = ctx
    return ctx


def serving_signature(ctx: int):
    """text in, text out, and the `params` a request may pass (`max_new_tokens`,
    `temperature`, `do_sample`; greedy by default): MLflow drops params a signature lacks."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string)]), outputs=Schema([ColSpec(DataType.string)]),
        params=ParamSchema([
            ParamSpec("max_new_tokens", DataType.long, default_max_new_tokens(ctx)),
            ParamSpec("temperature", DataType.double, 1.0),  # read only when do_sample is true
            ParamSpec("do_sample", DataType.boolean, False),
        ]))


def default_max_new_tokens(ctx: int) -> int:
    """What a serving request generates when it names no max_new_tokens: 128, at most half
    the context (the prompt keeps the other half)."""
    return max(1, min(128, ctx // 2))


def log_trained_model(out: Path, net, tokenizer, stage: str) -> str:
    """Log the exported checkpoint `out` (`net` and `tokenizer`, as saved there) into the
    active MLflow run as a text-generation model, tagged with the folder's content hash so
    `register` registers this logged model instead of storing the checkpoint again; the run
    gets the hash and the logged model's id as tags. Returns the model id."""
    import mlflow

    from phi1.tracking import content_hash

    md5 = content_hash(out)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ctx = serving_defaults(net, tokenizer)
    info = mlflow.transformers.log_model(
        transformers_model={"model": net, "tokenizer": tokenizer}, name="model", task="text-generation",
        signature=serving_signature(ctx), pip_requirements=pip_requirements(),
        # the completion only, the prompt cut from the left when it and max_new_tokens exceed the context
        model_config={"return_full_text": False, "handle_long_generation": "hole"},
        tags={CHECKPOINT_TAG: md5, "phi1.checkpoint.path": str(out), "phi1.stage": stage},
    )
    mlflow.set_tags({CHECKPOINT_TAG: md5, MODEL_ID_TAG: info.model_id})
    return info.model_id


@contextlib.contextmanager
def mlflow_run(stage: str, cfg, inputs: list[str], enabled: bool, system_metrics: bool):
    """`tracking.stage_run` on the main process (None elsewhere). Closing a run whose
    server has gone away warns instead of failing the finished stage."""
    if not enabled:
        yield None
        return
    import mlflow

    from phi1.tracking import stage_run

    if system_metrics:
        mlflow.enable_system_metrics_logging()
    cm = stage_run(stage, cfg, inputs=inputs)
    run = cm.__enter__()
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):
            cm.__exit__(*sys.exc_info())
        raise
    else:
        try:
            cm.__exit__(None, None, None)
        except Exception as exc:
            print(f"warning: could not close the MLflow run ({str(exc).splitlines()[0][:200]})",
                  file=sys.stderr, flush=True)
    finally:
        if system_metrics:
            mlflow.disable_system_metrics_logging()


def run_training(
    stage: str,
    cfg,
    build_model: Callable[[str], Any],
    tokenizer,
    tokens: Path,
    out: Path,
    state_dir: Path,
    metrics_path: Path,
    plots_dir: Path,
    *,
    min_mask: int,
    lineage: list[str],
    fingerprint_extra: dict[str, Any],
) -> dict:
    """Train `build_model(attention)` on `tokens` and export it with `tokenizer` into `out`."""
    import mlflow
    from accelerate.utils import set_seed

    t0 = time.time()
    for path, kind in ((out, "dir"), (plots_dir, "dir"), (metrics_path, "file")):
        check_output(path, lineage, kind)  # before hours of training, not after
    train_data, val_data = TokenShards(tokens, "train"), TokenShards(tokens, "val")
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    attention = resolve_attention(cfg.attention)
    with mlflow_run(stage, cfg, lineage, main, cfg.log_system_metrics) as run:
        log = RunLog(state_dir, run_id=run.info.run_id if run else None, enabled=main, headline=stage)
        set_seed(cfg.seed)  # the initial weights (pretrain) and dropout depend on it
        model = build_model(attention)
        log.call("log params", mlflow.log_params, {
            "model.n_params": sum(p.numel() for p in model.parameters()), "model.attention": attention,
            "run.world_size": accelerator.num_processes, "run.mixed_precision": accelerator.mixed_precision,
            "run.grad_accum_steps": cfg.global_batch_size // (cfg.micro_batch_size * accelerator.num_processes),
            "data.seq_len": train_data.seq_len, "data.train_rows": len(train_data), "data.val_rows": len(val_data),
        })
        log.call("log model config", mlflow.log_dict, model.config.to_dict(), "model/config.json")
        try:
            net, result = train(cfg, accelerator, model, train_data, val_data, state_dir, log,
                                min_mask=min_mask, fingerprint_extra=fingerprint_extra)
        finally:
            log.close()
        metrics: dict = {}
        if main:
            metrics = _finish(stage, cfg, net, tokenizer, result, log, out, metrics_path, plots_dir, t0, lineage)
        accelerator.wait_for_everyone()
    return metrics


def _finish(stage, cfg, net, tokenizer, result: LoopResult, log: RunLog, out: Path, metrics_path: Path,
            plots_dir: Path, t0: float, lineage: list[str]) -> dict:
    import math

    import mlflow

    metrics = {k: v for k, v in result.as_dict().items() if v is not None}
    metrics["ln_vocab_size"] = math.log(net.config.vocab_size)
    # steps x global batch x seq_len over the whole run (resumes included): the budget
    # that data ablations hold equal, under the name they compare.
    metrics["tokens_seen"] = result.tokens
    metrics["stage_seconds"] = round(time.time() - t0, 2)
    with outputs(lineage) as staged:  # checkpoint, loss curves and metrics land together
        tmp = staged.dir(out)
        net.config.use_cache = True
        serving_defaults(net, tokenizer)  # generation_config.json: greedy, within the context
        net.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        tmp = staged.dir(plots_dir)
        for series in ("train", "val"):
            _copy_without_run_figures(log.csv_path(series), tmp / f"{series}.csv")
        loss_plot(tmp / "train.csv", tmp / "val.csv", tmp / "loss.png", title=f"{stage}: loss")
        # timings, memory, resumes: in MLflow (final.*, below), not in the DVC metrics file
        staged.json(metrics_path, split_run_figures(metrics)[0])
    print(f"phi1 {stage}: {metrics['stage_seconds']:.1f} s", file=sys.stderr, flush=True)
    log.call("log metrics", mlflow.log_metrics,
             {f"final.{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    if result.resumed_from is not None:
        log.call("set tag", mlflow.set_tag, "phi1.resumed_from_step", str(result.resumed_from))
    log.call("log plots", log_folder, plots_dir, "plots")
    if cfg.log_model:  # the model `register` registers: stored once, its source run this one
        log.call("log model", log_trained_model, out, net, tokenizer, stage)
    return metrics


def _copy_without_run_figures(src: Path, dest: Path) -> None:
    """The loss log as a DVC plot, without the columns that differ between two runs of the
    same commit (throughput, memory, MFU): those stay in MLflow."""
    from phi1.tracking import RUN_FIGURES

    with open(src, newline="") as fin, open(dest, "w", newline="") as fout:
        reader = csv.DictReader(fin)
        fields = [f for f in reader.fieldnames or [] if f not in RUN_FIGURES and f != "mfu"]
        writer = csv.DictWriter(fout, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(reader)


def loss_plot(train_csv: Path, val_csv: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def read(path, col):
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get(col)]
        return [int(r["step"]) for r in rows], [float(r[col]) for r in rows]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*read(train_csv, "loss"), label="train")
    ax.plot(*read(val_csv, "val_loss"), marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def check_tokens(tokens: Path, tokenizer, where: str) -> dict:
    """The token folder's meta, after checking it was made with this tokenizer."""
    from phi1.engines.training.data import read_meta
    from phi1.engines.training.tokenizers import tokenizer_fingerprint

    meta = read_meta(tokens)
    if meta.get("tokenizer") != tokenizer_fingerprint(tokenizer):
        raise Phi1Error(f"{tokens} was tokenized with another tokenizer than {where}; rerun `phi1 tokenize`")
    return meta
