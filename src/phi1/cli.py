"""`phi1`: one command per pipeline stage (what dvc.yaml runs), plus tools around them.

    phi1 ingest                         # params.yaml section `ingest`
    phi1 filter -S filter.threshold=0.7 # override one key, as `dvc exp run -S` does
    phi1 params filter                  # print the resolved config

This module only parses arguments, loads the stage's config and calls the stage's
`run()`; the logic lives in the library, which never imports this module.
"""

from __future__ import annotations

import functools
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


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn a Phi1Error (or a missing input file) into a one-line error and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Phi1Error as exc:
            _fail(str(exc))
        except FileNotFoundError as exc:
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))

    return wrapper


def stage_command(name: str, **kwargs):
    """Register a stage command whose --help ends with the stage's params keys."""
    return app.command(name, epilog=describe(name), **kwargs)


def _config(stage: str, params: Path, overrides: Optional[list[str]]):
    return load_stage_config(stage, params, overrides or [])


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
    from phi1.annotate import run

    run(_config("annotate", params, overrides), raw=raw, out=out, metrics_path=metrics)


@stage_command("filter")
@user_errors
def filter_cmd(
    params: ParamsOpt = Path("params.yaml"),
    overrides: SetOpt = None,
    raw: Annotated[Path, typer.Option(help="Input dataset from `ingest`.")] = Path("data/raw"),
    annotations: Annotated[Path, typer.Option(help="Annotations from `annotate`.")] = Path("data/annotations"),
    out: Annotated[Path, typer.Option(help="Kept files with their quality score.")] = Path("data/codetextbook/filtered"),
    model_dir: Annotated[Path, typer.Option(help="Classifier and feature spec.")] = Path("models/quality"),
    metrics: Annotated[Path, typer.Option(help="Metrics JSON: held-out precision/recall/F1/ROC-AUC, kept counts.")] = Path("metrics/filter.json"),
    plots: Annotated[Path, typer.Option(help="Folder for the score histogram (PNG) and score CSV.")] = Path("plots/filter"),
) -> None:
    """Train the quality classifier on the annotations, score every file, keep the best."""
    from phi1.filter import run

    run(
        _config("filter", params, overrides), raw=raw, annotations=annotations, out=out,
        model_dir=model_dir, metrics_path=metrics, plots_dir=plots,
    )


DEFAULT_DATASETS = {
    "raw": "data/raw",
    "annotations": "data/annotations",
    "filtered": "data/codetextbook/filtered",
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
    from phi1.validate import run

    cfg = _config("validate", params, overrides)
    chosen: dict[str, Path] = {}
    for item in datasets or list(cfg.datasets):
        name, _, path = item.partition("=")
        if not path:
            if name not in DEFAULT_DATASETS:
                raise Phi1Error(f"unknown dataset {name!r}; give NAME=PATH or one of {', '.join(DEFAULT_DATASETS)}")
            path = DEFAULT_DATASETS[name]
        chosen[name] = Path(path)
    ok = run(cfg, datasets=chosen, expectations_dir=expectations, out=out, filter_metrics=filter_metrics)
    if not ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
