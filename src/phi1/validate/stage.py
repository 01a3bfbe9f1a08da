"""Great Expectations data gates: one suite per dataset; a failing suite fails the stage.

    phi1 validate                                   # the datasets in validate.datasets
    phi1 validate raw annotations=data/annotations  # NAME (default path) or NAME=PATH
    phi1 validate -S validate.data_docs=false       # skip the HTML Data Docs

Dataset NAME is checked against `expectations/NAME.json`: a Great Expectations 1.x suite in
the JSON form `ExpectationSuite.to_json_dict()` writes. Edit those files to change a gate;
add `expectations/<new>.json` (and a default path in the CLI) to gate a new dataset.

Before validating, columns that no stage stores but a suite checks are derived (`DERIVED`:
`parses`, whether `content` parses as Python), and suite parameters
(`{"$PARAMETER": name}`) are filled in (`PARAMETERS`: `raw_mean_score` from
metrics/filter.json). A failed expectation of severity `critical` (GX's default) fails the
gate; `warning` and `info` ones are reported but let the data through.

The report folder is replaced atomically, also when a gate fails (that is when it is
needed): `<name>.json` (the GX validation result), `summary.json` ({name: {success,
evaluated, failed}}), `index.html` and `data_docs/`. Failing expectations are printed as a
table on stderr.

`index.html` is the page to open: plain HTML, no scripts, no network (GX's own
`data_docs/index.html` fills its table with jQuery/Bootstrap from CDNs and is blank
offline). It lists each dataset's suite result with its counts and failing expectations
and links GX's per-dataset pages, which carry their content as HTML and read offline.

The folder is the same bytes for the same data and suites, so DVC does not rerun what
depends on it (tokenize) when validate reruns: GX's run time is the fixed `RUN_TIME`, and
the per-run values GX writes anyway (the batch load time, random ids of the validation
definition, the expectations and collapsible blocks, a timestamped logo URL) are replaced
by fixed ones. When a run happened is in MLflow, not here.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from phi1.config import ValidateConfig
from phi1.errors import Phi1Error
from phi1.io import atomic_dir, read_table, write_json

# phi1 never phones home on its own; export GX_ANALYTICS_ENABLED=true to opt in to GX's.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

DOCS_SITE = "phi1"
"""Name of the Data Docs site configured in the GX context."""

RUN_NAME = "phi1"
RUN_TIME = "1970-01-01T00:00:00+00:00"
"""The GX run identifier of every validation: fixed, so results and Data Docs (whose
folder names carry it) do not change from run to run."""
LOAD_TIME = "19700101T000000.000000Z"
"""Stands for GX's `ge_load_time` (the wall-clock time the batch was read)."""


def _parses(content: Any) -> bool:
    if not isinstance(content, str):
        return False
    with warnings.catch_warnings():  # invalid escape sequences etc. are not our concern here
        warnings.simplefilter("ignore")
        try:
            ast.parse(content)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


DERIVED: dict[str, tuple[str, Callable[[Any], Any]]] = {"parses": ("content", _parses)}
"""Derived column -> (the stored column it is computed from, the function of one value).
Computed only for suites that mention the column."""

PARAMETERS: dict[str, str] = {"raw_mean_score": "mean_score_all"}
"""Suite parameter -> the key of metrics/filter.json it is read from."""


@dataclass(frozen=True)
class Failure:
    """One failed expectation, as the table and summary.json show it."""

    dataset: str
    expectation: str
    column: str | None
    observed: str
    severity: str = "critical"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation, "column": self.column, "observed": self.observed,
            "severity": self.severity, "kwargs": self.kwargs,
        }


@dataclass
class DatasetResult:
    """The outcome of one suite on one dataset; `result` is GX's own result JSON."""

    name: str
    path: Path
    success: bool
    evaluated: int
    failures: list[Failure]
    result: dict[str, Any]


# --------------------------------------------------------------------------- inputs


def suite_path(expectations_dir: Path, name: str) -> Path:
    return Path(expectations_dir) / f"{name}.json"


def check_inputs(datasets: dict[str, Path], expectations_dir: Path) -> None:
    """Fail on a missing dataset or suite file before anything slow starts."""
    for name, path in datasets.items():
        if not Path(path).exists():
            raise Phi1Error(f"dataset {name!r} not found: {path}")
        if not suite_path(expectations_dir, name).is_file():
            raise Phi1Error(f"no suite for dataset {name!r}: {suite_path(expectations_dir, name)} not found")


def load_suite(path: Path, name: str | None = None):
    """Read a suite JSON file into a `gx.ExpectationSuite` named after the dataset.

    GX itself only logs and drops an expectation it cannot build; here that is an error
    naming the file and the expectation's index, so a typo never silently weakens a gate."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    path = Path(path)
    if not path.is_file():
        raise Phi1Error(f"suite file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise Phi1Error(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise Phi1Error(f"{path}: expected a GX suite object with an `expectations` list")
    for i, item in enumerate(data["expectations"]):
        kind = item.get("type") if isinstance(item, dict) else None
        try:
            ExpectationConfiguration(**item).to_domain_obj()
        except Exception as exc:  # ExpectationNotFoundError, pydantic ValidationError, TypeError
            raise Phi1Error(f"{path}: expectations[{i}] ({kind}): {_one_line(exc)}") from None
    # The file name is the dataset name; the suite id belongs to whichever context saved it.
    data = {**data, "name": name or path.stem}
    data.pop("id", None)
    try:
        return gx.ExpectationSuite(**data)
    except (TypeError, ValueError) as exc:
        raise Phi1Error(f"{path}: {_one_line(exc)}") from None


def referenced_columns(suite) -> set[str]:
    """Every column an expectation of the suite names."""
    cols: set[str] = set()
    for exp in suite.expectations:
        kwargs = exp.configuration.kwargs
        for key in ("column", "column_A", "column_B"):
            if isinstance(kwargs.get(key), str):
                cols.add(kwargs[key])
        for key in ("column_list", "column_set"):
            if isinstance(kwargs.get(key), (list, tuple)):
                cols.update(c for c in kwargs[key] if isinstance(c, str))
    return cols


def load_frame(name: str, path: Path, wanted: set[str] = frozenset()):
    """The dataset as a pandas DataFrame, plus the DERIVED columns in `wanted`."""
    import pyarrow as pa

    try:
        table = read_table(path)
    except FileNotFoundError:
        raise Phi1Error(f"dataset {name!r} has no parquet shards: {path}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise Phi1Error(f"dataset {name!r}: unreadable parquet under {path} ({_one_line(exc)})") from None
    df = table.to_pandas()
    for col, (source, fn) in DERIVED.items():
        if col in wanted and col not in df.columns and source in df.columns:
            df[col] = [fn(v) for v in df[source]]
    return df


def suite_parameters(suites: dict[str, Any], expectations_dir: Path, filter_metrics: Path) -> dict[str, float]:
    """Values of the suite parameters the suites use; metrics/filter.json is read only if needed."""
    needed: dict[str, str] = {}  # parameter -> the suite file that first uses it
    for name, suite in suites.items():
        for p in suite.suite_parameter_options:
            if p not in PARAMETERS:
                raise Phi1Error(
                    f"{suite_path(expectations_dir, name)}: unknown suite parameter {p!r} "
                    f"(known: {', '.join(sorted(PARAMETERS))})"
                )
            needed.setdefault(p, str(suite_path(expectations_dir, name)))
    if not needed:
        return {}
    filter_metrics = Path(filter_metrics)
    if not filter_metrics.is_file():
        p, where = next(iter(needed.items()))
        raise Phi1Error(f"{where} uses suite parameter {p!r}, read from {filter_metrics}, which is missing")
    try:
        metrics = json.loads(filter_metrics.read_text())
    except json.JSONDecodeError as exc:
        raise Phi1Error(f"{filter_metrics}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    values: dict[str, float] = {}
    for p in needed:
        key = PARAMETERS[p]
        value = metrics.get(key) if isinstance(metrics, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Phi1Error(f"{filter_metrics}: no numeric `{key}` (needed for suite parameter {p!r})")
        values[p] = float(value)
    return values


# --------------------------------------------------------------------------- validation


def _context(docs_dir: Path | None):
    """An in-memory GX context, with a local Data Docs site at `docs_dir` when given."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    # GX's tqdm bars would print one line per metric batch; ours show progress per dataset.
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir is not None:
        ctx.add_data_docs_site(
            DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return ctx


def validate(
    datasets: dict[str, Path],
    expectations_dir: Path,
    filter_metrics: Path,
    docs_dir: Path | None = None,
    result_format: str = "SUMMARY",
) -> list[DatasetResult]:
    """Run each dataset's suite; build Data Docs into `docs_dir` when given. No MLflow and
    no report files here: `run` adds those."""
    from phi1.engines.progress import progress_bar

    datasets = {n: Path(p) for n, p in datasets.items()}
    check_inputs(datasets, expectations_dir)
    import great_expectations as gx  # after the cheap checks: the import alone takes seconds

    suites = {n: load_suite(suite_path(expectations_dir, n), n) for n in datasets}
    params = suite_parameters(suites, expectations_dir, filter_metrics)

    import datetime

    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _context(docs_dir)
    source = ctx.data_sources.add_pandas("phi1")
    run_id = RunIdentifier(run_name=RUN_NAME, run_time=datetime.datetime.fromisoformat(RUN_TIME))
    volatile: dict[str, str] = {}
    results: list[DatasetResult] = []
    with progress_bar(len(datasets), "validate") as update:
        for done, (name, path) in enumerate(datasets.items()):
            update(done, f"validate {name}")
            suite = ctx.suites.add(suites[name])
            df = load_frame(name, path, referenced_columns(suite))
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            res = vd.run(batch_parameters={"dataframe": df}, expectation_parameters=params, result_format=result_format,
                         run_id=run_id)
            result = res.to_json_dict()
            volatile.update(steady_meta(name, result))
            results.append(summarise(name, path, result))
            del df
    if docs_dir is not None:
        ctx.build_data_docs(site_names=[DOCS_SITE])
        steady_docs(Path(docs_dir), volatile)
    return results


def steady_meta(name: str, result: dict[str, Any]) -> dict[str, str]:
    """Replace the per-run values of a GX result (batch load time, the random ids of the
    validation definition and of each expectation) by fixed ones, in place; return
    {old: new} for the Data Docs."""
    import uuid

    meta = result.get("meta") or {}
    changed: dict[str, str] = {}
    markers = meta.get("batch_markers")
    if isinstance(markers, dict) and isinstance(markers.get("ge_load_time"), str):
        changed[markers["ge_load_time"]] = LOAD_TIME
        markers["ge_load_time"] = LOAD_TIME
    if isinstance(meta.get("validation_id"), str):
        steady = str(uuid.uuid5(uuid.NAMESPACE_URL, f"phi1/validate/{name}"))
        changed[meta["validation_id"]] = steady
        meta["validation_id"] = steady
    # the store gives every expectation a random id when the suite is added
    for i, r in enumerate(result.get("results") or []):
        cfg = r.get("expectation_config") if isinstance(r, dict) else None
        if isinstance(cfg, dict) and isinstance(cfg.get("id"), str):
            steady = str(uuid.uuid5(uuid.NAMESPACE_URL, f"phi1/validate/{name}/{i}"))
            changed[cfg["id"]] = steady
            cfg["id"] = steady
    return changed


_GX_LOGO = re.compile(r"https://great-expectations-web-assets\.s3[^\"']*/logo-long\.png\?d=[0-9T.Z]+")
_GX_COLLAPSE = re.compile(r"-collapse-body-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def steady_docs(docs_dir: Path, volatile: dict[str, str]) -> None:
    """Make GX's Data Docs pages the same bytes on every run: the `volatile` strings (see
    `steady_meta`) become their fixed values, the random ids of collapsible blocks are
    numbered, and the logo GX fetches from S3 with the render time in its URL becomes the
    copy under static/images."""
    for page in sorted(Path(docs_dir).rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        for old, new in volatile.items():
            text = text.replace(old, new)
        logo = os.path.relpath(Path(docs_dir) / "static/images/logo-long.png", page.parent)
        text = _GX_LOGO.sub(Path(logo).as_posix(), text)
        numbers: dict[str, str] = {}  # a random id per collapsible block: numbered in page order
        text = _GX_COLLAPSE.sub(lambda m: "-collapse-body-" + numbers.setdefault(m[1], str(len(numbers) + 1)), text)
        page.write_text(text, encoding="utf-8")


def summarise(name: str, path: Path, result: dict[str, Any]) -> DatasetResult:
    """Turn GX's result JSON into our verdict: failed if any critical expectation failed."""
    failures = []
    for r in result.get("results") or []:
        if r.get("success"):
            continue
        cfg = r.get("expectation_config") or {}
        kwargs = {k: v for k, v in (cfg.get("kwargs") or {}).items() if k != "batch_id"}
        failures.append(Failure(
            dataset=name, expectation=cfg.get("type", "?"), column=_column(kwargs),
            observed=_observed(r), severity=str(cfg.get("severity") or "critical"), kwargs=kwargs,
        ))
    return DatasetResult(
        name=name, path=Path(path),
        success=not any(f.severity == "critical" for f in failures),
        evaluated=int((result.get("statistics") or {}).get("evaluated_expectations", 0)),
        failures=failures, result=result,
    )


def _column(kwargs: dict[str, Any]) -> str | None:
    if isinstance(kwargs.get("column"), str):
        return kwargs["column"]
    if "column_A" in kwargs:
        return f"{kwargs['column_A']}, {kwargs.get('column_B')}"
    if isinstance(kwargs.get("column_list"), list):
        return ", ".join(map(str, kwargs["column_list"]))
    return None


def _observed(r: dict[str, Any]) -> str:
    """A short human reading of what GX saw for one failed expectation."""
    info = r.get("exception_info") or {}
    # exception_info is either one record or a mapping of metric id -> record
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for rec in records:
        if rec.get("raised_exception"):
            return "error: " + _one_line(rec.get("exception_message") or "exception")
    res = r.get("result") or {}
    mismatched = (res.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict):
        return "; ".join(f"{k}: {_short(v)}" for k, v in mismatched.items() if v) or _short(res.get("observed_value"))
    if "observed_value" in res:
        return _short(res["observed_value"]) + _bounds((r.get("expectation_config") or {}).get("kwargs") or {})
    if "unexpected_count" in res:
        text = f"{res['unexpected_count']} of {res.get('element_count', '?')} unexpected"
        sample = []
        for v in res.get("partial_unexpected_list") or []:
            v = _short(v, 40) if isinstance(v, str) else v
            if v not in sample:
                sample.append(v)
        if sample:
            text += f", e.g. {_short(sample[:3])}"
        return text
    return _short(res) if res else "-"


def _bounds(kwargs: dict[str, Any]) -> str:
    """`(expected > 0.61)` for the *_to_be_between expectations, whose observed value alone says little."""
    parts = []
    if kwargs.get("min_value") is not None:
        parts.append(f"{'>' if kwargs.get('strict_min') else '>='} {_short(kwargs['min_value'])}")
    if kwargs.get("max_value") is not None:
        parts.append(f"{'<' if kwargs.get('strict_max') else '<='} {_short(kwargs['max_value'])}")
    return f" (expected {' and '.join(parts)})" if parts else ""


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(exc: Any) -> str:
    return " ".join(str(exc).split())


# --------------------------------------------------------------------------- reporting


def summary(results: list[DatasetResult]) -> dict[str, Any]:
    return {
        r.name: {
            "success": r.success,
            "evaluated": r.evaluated,
            "failed": [f.to_dict() for f in r.failures],
            "path": str(r.path),
        }
        for r in results
    }


def write_report(results: list[DatasetResult], out_dir: Path) -> None:
    for r in results:
        write_json(Path(out_dir) / f"{r.name}.json", r.result)
    write_json(Path(out_dir) / "summary.json", summary(results))
    write_index(results, out_dir)


def _cell(v: Any) -> str:
    return f"<td>{html.escape('-' if v is None else str(v))}</td>"


def write_index(results: list[DatasetResult], out_dir: Path) -> None:
    """`out_dir/index.html`: each dataset's suite result with its counts, its failing
    expectations, and links to GX's per-dataset pages under data_docs/ when they exist.
    Plain HTML (no scripts, no network) and no timestamps: it opens offline and is the same
    bytes for the same results."""
    out_dir = Path(out_dir)
    docs = out_dir / "data_docs"
    rows, failing = [], []
    for r in results:
        stats = r.result.get("statistics") or {}
        critical = sum(1 for f in r.failures if f.severity == "critical")
        links = []
        for label, pages in (("validation result", sorted((docs / "validations" / r.name).rglob("*.html"))),
                             ("suite", [p for p in [docs / "expectations" / f"{r.name}.html"] if p.is_file()])):
            if pages:
                links.append(f'<a href="{html.escape(pages[0].relative_to(out_dir).as_posix())}">{label}</a>')
        rows.append(
            f'<tr class="{"pass" if r.success else "fail"}"><td>{html.escape(r.name)}</td>'
            f"<td>{'passed' if r.success else 'FAILED'}</td>"
            + _cell(r.evaluated) + _cell(stats.get("successful_expectations"))
            + _cell(len(r.failures)) + _cell(critical) + _cell(r.path.as_posix())
            + f"<td>{' &middot; '.join(links) or '-'}</td></tr>")
        for f in r.failures:
            failing.append("<tr>" + "".join(_cell(v) for v in (r.name, f.expectation, f.column, f.observed, f.severity))
                           + "</tr>")
    ok = all(r.success for r in results)
    verdict = (f"All {len(results)} suites passed." if ok else
               f"{sum(not r.success for r in results)} of {len(results)} suites FAILED: nothing trains on this data.")
    failing_html = ("<h2>Failing expectations</h2><table><tr><th>dataset</th><th>expectation</th><th>column</th>"
                    "<th>observed</th><th>severity</th></tr>" + "".join(failing) + "</table>") if failing else \
        "<p>No expectation failed.</p>"
    docs_note = ("<p class=\"src\">The links open Great Expectations' own pages for each dataset (they read "
                 "offline, unstyled). Its index, data_docs/index.html, needs scripts from CDNs and is blank "
                 "offline; this page stands in for it.</p>") if docs.is_dir() else \
        "<p class=\"src\">Data Docs were not built (validate.data_docs: false).</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>phi1 data validation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:small}} td,th{{border:1px solid #ddd;padding:2px 6px;text-align:left}}
tr.fail td{{background:#fde8e8}} .src{{font-size:small;color:#666}}</style>
</head><body><h1>phi1 data validation (Great Expectations)</h1>
<p>{html.escape(verdict)}</p>
<table><tr><th>dataset</th><th>suite</th><th>expectations</th><th>successful</th><th>failed</th>
<th>critical</th><th>data</th><th>pages</th></tr>
{chr(10).join(rows)}
</table>
{failing_html}
{docs_note}
<p class="src">From summary.json and &lt;dataset&gt;.json in this folder (phi1 validate).</p>
</body></html>
"""
    (out_dir / "index.html").write_text(page, encoding="utf-8")


def print_report(results: list[DatasetResult], console, out: Path | None = None) -> None:
    """One line per dataset, then the failing expectations as a table (on `console`)."""
    from rich.table import Table
    from rich.text import Text

    for r in results:
        n_failed = len(r.failures)
        if r.success and not n_failed:
            console.print(f"[green]pass[/] {r.name}: {r.evaluated} expectations")
        elif r.success:
            console.print(f"[yellow]pass[/] {r.name}: {n_failed} of {r.evaluated} failed, none critical")
        else:
            console.print(f"[red]FAIL[/] {r.name}: {n_failed} of {r.evaluated} expectations failed")
    failures = [f for r in results for f in r.failures]
    if failures:
        # a severity column only when some failure is not critical: 80-column CI logs are narrow
        show_severity = any(f.severity != "critical" for f in failures)
        table = Table(title="failing expectations", title_justify="left")
        table.add_column("dataset", no_wrap=True)
        table.add_column("expectation type", no_wrap=True)
        table.add_column("column", overflow="fold")
        table.add_column("observed value", overflow="fold", ratio=1, min_width=12)
        if show_severity:
            table.add_column("severity", no_wrap=True)
        for f in failures:
            row = [f.dataset, f.expectation, f.column or "-", f.observed, *([f.severity] if show_severity else [])]
            table.add_row(*(Text(cell) for cell in row))  # Text: a value like [false] is not markup
        console.print(table)
    if out is not None:
        console.print(f"report: {out / 'summary.json'}")
        if (out / "index.html").is_file():
            console.print(f"results page (offline): {out / 'index.html'}")


def resolve_datasets(items: list[str], known: dict[str, str]) -> dict[str, Path]:
    """`NAME=PATH` or `NAME` (a name of `known`, the dataset paths dvc.yaml gives) ->
    {name: path}, in the order given."""
    chosen: dict[str, Path] = {}
    for item in items:
        name, _, path = item.partition("=")
        if not path:
            if name not in known:
                raise Phi1Error(f"unknown dataset {name!r}; give NAME=PATH or one of {', '.join(known)}")
            path = known[name]
        chosen[name] = Path(path)
    return chosen


def run(cfg: ValidateConfig, datasets: dict[str, Path], expectations_dir: Path, out: Path, filter_metrics: Path) -> bool:
    """`phi1 validate`: run the suites, write the report folder, log to MLflow; True when
    every gate passes."""
    import mlflow
    from rich.console import Console

    from phi1.tracking import stage_run

    datasets = {n: Path(p) for n, p in datasets.items()}
    expectations_dir, out, filter_metrics = Path(expectations_dir), Path(out), Path(filter_metrics)
    check_inputs(datasets, expectations_dir)  # before a tracking run is opened for a typo
    console = Console(stderr=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # dvc repro and CI capture stderr into logs: no reason to wrap the table at 80 columns there
        console = Console(stderr=True, width=160)
    inputs = [*datasets.values(), *(suite_path(expectations_dir, n) for n in datasets)]
    if filter_metrics.is_file():
        inputs.append(filter_metrics)
    with stage_run("validate", cfg, inputs=inputs):
        with atomic_dir(out, inputs) as tmp:
            results = validate(
                datasets, expectations_dir, filter_metrics,
                docs_dir=tmp / "data_docs" if cfg.data_docs else None,
                result_format=cfg.result_format,
            )
            write_report(results, tmp)
        ok = all(r.success for r in results)
        for r in results:
            mlflow.log_metrics({
                f"{r.name}.success": float(r.success),
                f"{r.name}.evaluated": float(r.evaluated),
                f"{r.name}.failed": float(len(r.failures)),
            })
        mlflow.set_tag("validate.success", str(ok).lower())
        for r in results:
            mlflow.log_artifact(str(out / f"{r.name}.json"), artifact_path="validation")
        mlflow.log_artifact(str(out / "summary.json"), artifact_path="validation")
    print_report(results, console, out)
    return ok
