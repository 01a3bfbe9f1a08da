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

Memory stays bounded by the batch, not the dataset: GX sees `BATCH_ROWS` rows at a time.
Row-by-row expectations (GX's map expectations: not null, regex, between, in set, ...) run
on each batch and their results are merged with GX's own formatting (counts summed, the
first unexpected values kept), so they read as if GX had seen the whole table. Schema
expectations (column set, column exists, dtype) are read from the batches too. The rest
need every row at once (uniqueness, unique-value counts, mean, max, row count): they run
on one frame of just the columns they name. Results are those of one whole-table run.

The folder is the same bytes for the same data and suites, so DVC does not rerun what
depends on it (tokenize) when validate reruns: GX's run time is the fixed `RUN_TIME`, and
the per-run values GX writes anyway (the batch load time, random ids of the validation
definition, the expectations and collapsible blocks, a timestamped logo URL) are replaced
by fixed ones. When a run happened is in MLflow, not here.
"""

from __future__ import annotations

import ast
import hashlib
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
from phi1.io import atomic_dir, write_json

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

BATCH_ROWS = 2000
"""Rows GX validates at once: a batch of files' contents, not the whole dataset, is in memory."""

CROSS_ROW = frozenset({
    "expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique",
    "expect_multicolumn_values_to_be_unique",
})
"""Map expectations whose verdict on a row depends on the other rows: run on the whole column."""

SCHEMA = frozenset({
    "expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list",
    "expect_column_to_exist", "expect_table_column_count_to_equal", "expect_table_column_count_to_be_between",
    "expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list",
})
"""Expectations on the columns and their dtypes, which every batch of a dataset shares."""


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
    batch_rows: int = BATCH_ROWS,
) -> list[DatasetResult]:
    """Run each dataset's suite, `batch_rows` rows at a time; build Data Docs into
    `docs_dir` when given. No MLflow and no report files here: `run` adds those."""
    from phi1.engines.progress import progress_bar

    datasets = {n: Path(p) for n, p in datasets.items()}
    check_inputs(datasets, expectations_dir)
    import great_expectations as gx  # after the cheap checks: the import alone takes seconds

    suites = {n: load_suite(suite_path(expectations_dir, n), n) for n in datasets}
    params = suite_parameters(suites, expectations_dir, filter_metrics)

    import datetime

    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.core.validation_definition import DATAFRAME_REPLACEMENT_STR
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    ctx = _context(docs_dir)
    source = ctx.data_sources.add_pandas("phi1")
    run_id = RunIdentifier(run_name=RUN_NAME, run_time=datetime.datetime.fromisoformat(RUN_TIME))
    volatile: dict[str, str] = {}
    results: list[DatasetResult] = []
    with progress_bar(len(datasets), "validate") as update:
        for done, (name, path) in enumerate(datasets.items()):
            update(done, f"validate {name}")
            suite = ctx.suites.add(suites[name])
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            res = validate_in_batches(name, path, suite, batch, params, result_format, batch_rows)
            # what ValidationDefinition.run adds, and the result stored where Data Docs read it
            res.meta.update(validation_id=vd.id, checkpoint_id=None, run_id=run_id, validation_time=run_id.run_time,
                            batch_parameters={"dataframe": DATAFRAME_REPLACEMENT_STR})
            suite_id = ExpectationSuiteIdentifier(name=suite.name)
            ctx.validation_results_store.store_validation_results(
                suite_validation_result=res, expectation_suite_identifier=suite_id,
                suite_validation_result_identifier=ValidationResultIdentifier(
                    batch_identifier=res.batch_id, expectation_suite_identifier=suite_id, run_id=run_id))
            result = res.to_json_dict()
            volatile.update(steady_meta(name, result))
            results.append(summarise(name, path, result))
    if docs_dir is not None:
        ctx.build_data_docs(site_names=[DOCS_SITE])
        steady_docs(Path(docs_dir), volatile)
    return results


def expectation_scope(exp) -> str:
    """`rows` (a row-by-row check: merged over batches), `schema` (the same in every batch)
    or `whole` (needs every row at once)."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    kind = exp.expectation_type
    if kind in SCHEMA:
        return "schema"
    if kind not in CROSS_ROW and isinstance(exp, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
        return "rows"
    return "whole"


def iter_frames(name: str, path: Path, wanted: set[str], batch_rows: int):
    """The dataset as pandas DataFrames of at most `batch_rows` rows (indexed by row number
    in the dataset), plus the DERIVED columns in `wanted`; one empty frame for no rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phi1.io import shard_files

    files = shard_files(path)
    if not files:
        raise Phi1Error(f"dataset {name!r} has no parquet shards: {path}")
    start, schema = 0, None
    try:
        for f in files:
            shard = pq.ParquetFile(f)
            schema = schema or shard.schema_arrow
            for batch in shard.iter_batches(batch_size=batch_rows):
                if batch.num_rows:
                    yield _with_derived(batch.to_pandas().set_axis(pd.RangeIndex(start, start + batch.num_rows)), wanted)
                    start += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise Phi1Error(f"dataset {name!r}: unreadable parquet under {path} ({_one_line(exc)})") from None
    if not start:
        yield _with_derived(schema.empty_table().to_pandas(), wanted)


def _with_derived(df, wanted: set[str]):
    for col, (source, fn) in DERIVED.items():
        if col in wanted and col not in df.columns and source in df.columns:
            df[col] = [fn(v) for v in df[source]]
    return df


def whole_frame(name: str, path: Path, columns: set[str], batch_rows: int):
    """Just `columns` of the dataset, all rows (a frame with no columns keeps the row count):
    what the expectations that need every row at once read."""
    import pandas as pd

    parts, n = [], 0
    for df in iter_frames(name, path, columns, batch_rows):
        n += len(df)
        parts.append(df[[c for c in df.columns if c in columns]])
    frame = pd.concat(parts) if parts[0].shape[1] else pd.DataFrame(index=pd.RangeIndex(n))
    return frame


def validate_in_batches(name: str, path: Path, suite, batch_definition, params: dict[str, float],
                        result_format: str, batch_rows: int = BATCH_ROWS):
    """GX's result of `suite` on the dataset at `path`, computed `batch_rows` rows at a time
    (see the module doc); the same as one run on the whole table."""
    import copy

    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator, calc_validation_statistics

    if batch_rows < 1:
        raise Phi1Error(f"validate: batch_rows must be >= 1, got {batch_rows}")
    scope = [expectation_scope(e) for e in suite.expectations]

    def part(keep):  # a suite of some of the expectations (copies with the stored ids: results name them)
        chosen = [e for e, s in zip(suite.expectations, scope) if keep(s)]
        some = gx.ExpectationSuite(name=suite.name, expectations=[copy.copy(e) for e in chosen])
        for c, e in zip(some.expectations, chosen):
            c.id = e.id
        return some

    per_batch, whole = part(lambda s: s != "whole"), part(lambda s: s == "whole")

    def check(exps, df):
        validator = Validator(batch_definition=batch_definition, batch_parameters={"dataframe": df}, result_format=result_format)
        return validator.validate_expectation_suite(exps, params)

    first, batches = None, []  # batches: each batch's results by expectation id
    fingerprint = hashlib.md5(usedforsecurity=False)
    for df in iter_frames(name, path, referenced_columns(per_batch) if per_batch.expectations else set(), batch_rows):
        fingerprint.update(_row_hashes(df))
        res = check(per_batch, df) if per_batch.expectations else None
        if first is None:
            first = res
        if res is not None:
            batches.append({r.expectation_config.id: r for r in res.results})
        del df
    by_id = {exp.id: _merge(exp, [b[exp.id] for b in batches], result_format) for exp in per_batch.expectations}
    if whole.expectations:
        res = check(whole, whole_frame(name, path, referenced_columns(whole), batch_rows))
        first = first or res
        by_id.update((r.expectation_config.id, r) for r in res.results)
    if first is None:  # a suite with no expectations
        first = check(suite, whole_frame(name, path, set(), batch_rows))
    results = [by_id[e.id] for e in gx_order(suite.expectations)]
    stats = calc_validation_statistics(results)
    merged = copy.copy(first)
    merged.results, merged.success, merged.suite_name = results, stats.success, suite.name
    merged.meta = {**first.meta, "batch_markers": {**first.meta.get("batch_markers", {}),
                                                   "pandas_data_fingerprint": fingerprint.hexdigest()}}
    merged.statistics = {
        "evaluated_expectations": stats.evaluated_expectations,
        "successful_expectations": stats.successful_expectations,
        "unsuccessful_expectations": stats.unsuccessful_expectations,
        "success_percent": stats.success_percent,
    }
    return merged


def _row_hashes(df) -> bytes:
    """GX's `pandas_data_fingerprint` is the md5 of these bytes for the whole frame; fed
    batch by batch they give the same value when every batch has the whole frame's dtypes.
    A frame pandas cannot hash (list cells) is pickled, as GX does, per batch. Either way
    the fingerprint is the same for the same data and batch size."""
    import pickle

    import pandas as pd

    try:
        return pd.util.hash_pandas_object(df, index=True).values.tobytes()
    except TypeError:
        return pickle.dumps(df, pickle.HIGHEST_PROTOCOL)


def gx_order(expectations: list) -> list:
    """The order GX lists results in: grouped by column, in order of first mention
    (`Validator.process_expectations_for_validation`)."""
    groups: dict[str | None, list] = {}
    for e in expectations:
        column = e.configuration.kwargs.get("column")
        groups.setdefault(column if isinstance(column, str) else None, []).append(e)
    return [e for group in groups.values() for e in group]


def _merge(exp, parts: list, result_format: str):
    """One expectation's results on each batch -> its result on all of them."""
    import copy

    from great_expectations.expectations.expectation import _format_map_output, _mostly_success
    from great_expectations.expectations.expectation_configuration import parse_result_format

    for r in parts:  # an error (or, for a schema expectation, a failure) speaks for the whole table
        if r.exception_info.get("raised_exception") or (not r.success and expectation_scope(exp) == "schema"):
            return r
    if expectation_scope(exp) == "schema" or len(parts) == 1 or "element_count" not in (parts[0].result or {}):
        return next((r for r in parts if not r.success), parts[0])
    res = [r.result for r in parts]
    element = sum(r["element_count"] for r in res)
    unexpected = sum(r["unexpected_count"] for r in res)
    nonnull = element - sum(r["missing_count"] for r in res) if "missing_count" in res[0] else None

    def joined(*keys):
        for key in keys:
            if key in res[0]:
                return [v for r in res for v in r[key]]
        return None

    considered = element if nonnull is None else nonnull
    mostly = exp.configuration.kwargs.get("mostly", 1.0)
    success = True if not considered else _mostly_success(considered, unexpected, mostly)
    out = _format_map_output(
        result_format=parse_result_format(result_format), success=success, element_count=element,
        nonnull_count=nonnull, unexpected_count=unexpected,
        unexpected_list=joined("unexpected_list", "partial_unexpected_list"),
        unexpected_index_list=joined("unexpected_index_list", "partial_unexpected_index_list"),
    )
    merged = copy.copy(parts[0])
    merged.success, merged.result = success, out.get("result", {})
    return merged


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
