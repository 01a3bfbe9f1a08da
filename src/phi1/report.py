"""Seeing results: `phi1 summary` (what a pipeline run made, in 80 columns), `phi1
compare` (a rich table) and `phi1 report` (static HTML).

    phi1 summary                      # the headline figure of each stage, from metrics/*.json
    phi1 compare                      # newest runs: data hashes, params that differ, metrics
    phi1 compare --models             # versions of the registered model: lineage, gates, aliases
    phi1 report --out reports/report  # index.html + PNGs; opens offline
    phi1 plots-template               # `dvc plots show` template with vega inlined (offline)

The report is one self-contained HTML file (figures embedded as base64 PNG, no scripts,
no network) with the same PNGs beside it. It holds the numbers (eval per checkpoint and
benchmark: pass@k, solution loss; probes per library), the models (the versions the
last `register` run made with each gate's verdict, from metrics/register.json; the
`champion` and `challenger` with git commit, params hash and DVC data hashes, read from
the MLflow registry), the figures (loss curves, pass@k, solution loss, probe results,
the quality-score histogram, the contamination sweep) and the validation results,
linked to reports/validation/index.html. Each figure is drawn only when its input
exists; the page lists the ones left out and why. A bar chart whose values are all 0
(pass@k when nothing passed) is replaced by a sentence saying so, and so is marked a
champion whose every pass metric is 0. Table 3 (reports/eval/table3.json: tasks similar
and not similar to the training data per tau) is among the numbers. When `phi1 ablate`
has written reports/ablation, its figure and table are added.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from pathlib import Path
from typing import Any, Optional

from phi1.io import atomic_dir

# --------------------------------------------------------------------------- summary


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_rows(metrics_dir: str | Path = "metrics") -> list[tuple[str, str, str]]:
    """(stage, figure, value): the headline figures of a pipeline run, from the stages'
    metrics files; a stage whose file is missing is left out."""
    m = {p.stem: _read_json(p) for p in sorted(Path(metrics_dir).glob("*.json"))}
    rows: list[tuple[str, str, str]] = []
    if (d := m.get("ingest")) is not None:
        drops = ", ".join(f"{k} {v}" for k, v in sorted((d.get("dropped") or {}).items(), key=lambda kv: -kv[1]) if v)
        rows += [("ingest", "files kept / read", f"{d.get('n_kept')} / {d.get('n_read')}"),
                 ("ingest", "dropped", drops or "none")]
    if (d := m.get("annotate")) is not None:
        rows.append(("annotate", "rated, positive share", f"{d.get('n')}, {_fmt(d.get('positive_fraction'))}"))
    if (d := m.get("filter")) is not None:
        rows += [("filter", "held-out ROC-AUC, F1", f"{_fmt(d.get('roc_auc'))}, {_fmt(d.get('f1'))}"),
                 ("filter", "files kept", f"{d.get('n_kept')} of {d.get('n_scored')} ({_fmt(d.get('kept_fraction'), 2)})")]
        if (r := d.get("refine")) is not None:
            rows.append(("filter", f"second pass ({r.get('embedding')})",
                         f"{r.get('n_refined')} rescored, {r.get('n_flipped')} flipped"))
    if (d := m.get("synthesize")) is not None:
        rows.append(("synthesize", "textbook sections, exercises",
                     f"{_get(d, 'textbook', 'n')}, {_get(d, 'exercises', 'n')}"))
    if (d := m.get("decontaminate")) is not None:
        removed = ", ".join(f"{k} {v}" for k, v in (d.get("removed") or {}).items())
        rows.append(("decontaminate", f"removed at tau {d.get('tau')}", removed or "-"))
    if (d := m.get("tokenize")) is not None:
        rows.append(("tokenize", "train tokens: pretrain, finetune",
                     f"{_get(d, 'pretrain', 'train_tokens')}, {_get(d, 'finetune', 'train_tokens')}"))
    for stage in ("pretrain", "finetune"):
        if (d := m.get(stage)) is not None:
            rows.append((stage, "val loss first -> best (step)",
                         f"{_fmt(d.get('first_val_loss'))} -> {_fmt(d.get('best_val_loss'))} ({d.get('best_step')})"))
    for ckpt, benches in (m.get("eval") or {}).items():
        for bm, v in (benches or {}).items():
            rows.append(("evaluate", f"{ckpt} {bm}: pass@1, sol. loss",
                         f"{_fmt(v.get('pass@1'))}, {_fmt(v.get('solution_loss'))}"))
    for ckpt, v in (m.get("probe") or {}).items():
        if ckpt == "emergence":
            if isinstance(d := (v or {}).get("solution_loss_delta"), dict) and d.get("mean") is not None:
                ci = d.get("ci95")
                rows.append(("probe", f"{v.get('finetuned')} - {v.get('base')} sol. loss, 95% CI",
                             f"{d['mean']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}]" if ci else f"{d['mean']:+.4f}"))
            continue
        rows.append(("probe", f"{ckpt}: pass rate, sol. loss, {v.get('n_probes')} probes",
                     f"{_fmt(v.get('pass_rate'))}, {_fmt(v.get('solution_loss'))}"))
    for model, v in (m.get("register") or {}).items():
        state = "champion" if v.get("promoted") else ("promotable" if v.get("promotable") else "challenger")
        rows.append(("register", f"{model}", f"v{v.get('version')} {state}"))
    return rows


def summary_table(rows: list[tuple[str, str, str]], title: str = "phi1: what the pipeline made"):
    """An 80-column rich table of `summary_rows`."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("stage", style="bold", no_wrap=True)
    table.add_column("figure")
    table.add_column("value", overflow="fold")
    last = None
    for stage, figure, value in rows:
        table.add_row(stage if stage != last else "", figure, value)
        last = stage
    return table


# --------------------------------------------------------------------------- compare


def run_rows(stage: Optional[str] = None, limit: int = 20, experiment: Optional[str] = None,
             variant: Optional[str] = None) -> list[dict[str, Any]]:
    """The newest runs of the experiment (default: $PHI1_EXPERIMENT) and of its data
    sibling as rows: name, stage (and variant, for ablation runs), data hashes, params,
    metrics."""
    from mlflow import MlflowClient

    from phi1.tracking import experiment_ids

    exp_ids = experiment_ids(experiment)
    clauses = [f"tags.`phi1.stage` = '{stage}'"] if stage else []
    clauses += [f"tags.`phi1.variant` = '{variant}'"] if variant else []
    flt = " and ".join(clauses)
    runs = MlflowClient().search_runs(exp_ids, flt, max_results=limit, order_by=["attributes.start_time DESC"])
    rows = []
    for r in runs:
        tags = r.data.tags
        rows.append({
            "name": r.info.run_name + (f" [{tags['phi1.variant']}]" if "phi1.variant" in tags else ""),
            "id": r.info.run_id[:8], "stage": tags.get("phi1.stage", "-"),
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.info.start_time / 1000)),
            "status": r.info.status,
            "data": {k[len("data."):]: v for k, v in tags.items() if k.startswith("data.")},
            "params": dict(r.data.params), "metrics": dict(r.data.metrics),
        })
    return _keep_differing_params(rows)


def _keep_differing_params(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Key params = those whose value differs between the rows (all of them for one row)."""
    if len(rows) < 2:
        return rows
    keys = set().union(*(r["params"] for r in rows))
    differ = {k for k in keys if len({r["params"].get(k) for r in rows}) > 1}
    for r in rows:
        r["params"] = {k: v for k, v in r["params"].items() if k in differ}
    return rows


def model_rows(model: str, limit: int = 20) -> list[dict[str, Any]]:
    """Versions of a registered model as rows: aliases, lineage hashes, gate metrics."""
    from mlflow.exceptions import MlflowException

    from phi1.errors import Phi1Error
    from phi1.engines.model_registry import client

    c = client()
    try:
        aliases = c.get_registered_model(model).aliases
    except MlflowException:
        raise Phi1Error(f"registered model {model!r} not found in the registry") from None
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    versions = sorted(c.search_model_versions(f"name='{model}'"), key=lambda mv: -int(mv.version))[:limit]
    rows = []
    for mv in versions:
        tags = mv.tags
        data = {k[len("lineage.dvc."):]: v for k, v in tags.items() if k.startswith("lineage.dvc.")}
        data["checkpoint"] = tags.get("checkpoint.hash", "-")
        metrics = {k: float(v) for k, v in tags.items()
                   if k.startswith(("eval.", "probe.")) and _is_number(v)}
        rows.append({
            "name": f"{model} v{mv.version}", "id": (mv.run_id or "-")[:8],
            "stage": ", ".join(sorted(by_version.get(str(mv.version), []))) or "-",
            "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(mv.creation_timestamp / 1000)),
            "status": tags.get("validation.status", "-"),
            "data": data,
            "params": {"params.sha256": tags.get("params.sha256", "-")[:12], "git": tags.get("git.commit", "-")[:10]},
            "metrics": metrics,
        })
    return rows


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _short(h: str) -> str:
    return h.split(":", 1)[-1][:8]


def compare_table(rows: list[dict[str, Any]], what: str = "runs", max_metrics: int = 8):
    """The rows as a rich Table (one cell per column, key=value lines)."""
    from rich.markup import escape  # run names may hold brackets: "pretrain [filtered]"
    from rich.table import Table

    t = Table(title=f"phi1: {len(rows)} {what}", show_lines=True)
    second = "aliases" if what != "runs" else "stage"
    third = "validation" if what != "runs" else "status"
    for col in ("name", "id", second, "started", third, "data hashes", "key params", "metrics"):
        t.add_column(col, overflow="fold")
    for r in rows:
        metrics = dict(sorted(r["metrics"].items())[:max_metrics])
        more = len(r["metrics"]) - len(metrics)
        t.add_row(
            escape(r["name"]), r["id"], r["stage"], r["started"], r["status"],
            "\n".join(f"{k}={_short(v)}" for k, v in sorted(r["data"].items())) or "-",
            "\n".join(f"{k}={v}" for k, v in sorted(r["params"].items())) or "-",
            "\n".join(f"{k}={v:.4g}" for k, v in metrics.items()) + (f"\n(+{more} more)" if more > 0 else "") or "-",
        )
    return t


# --------------------------------------------------------------------------- report


def compare(model: Optional[str] = None, stage: Optional[str] = None, limit: int = 20,
            experiment: Optional[str] = None, variant: Optional[str] = None):
    """The `phi1 compare` table: the newest `limit` versions of registered `model` when
    given, else the newest runs (of `stage`, `experiment`, `variant` when given)."""
    if model is not None:
        return compare_table(model_rows(model, limit), "model versions")
    return compare_table(run_rows(stage, limit, experiment=experiment, variant=variant), "runs")


def _read_json(path: Path) -> Optional[Any]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def fig_loss(plots_dir: Path) -> Optional[bytes]:
    """Train and validation loss of pretrain and finetune (plots/<stage>/{train,val}.csv)."""
    import matplotlib.pyplot as plt

    stages = [s for s in ("pretrain", "finetune") if _read_csv(plots_dir / s / "train.csv")]
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        train = [r for r in _read_csv(plots_dir / stage / "train.csv") if r.get("loss")]
        val = [r for r in _read_csv(plots_dir / stage / "val.csv") if r.get("val_loss")]
        ax.plot([int(r["step"]) for r in train], [float(r["loss"]) for r in train], label="train")
        if val:
            ax.plot([int(r["step"]) for r in val], [float(r["val_loss"]) for r in val], marker="o", label="validation")
        ax.set_title(f"{stage}: loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
    return _png(fig)


def fig_passk(evals: Any) -> Optional[bytes]:
    """Grouped bars: pass@k of each checkpoint on each benchmark (metrics/eval.json)."""
    import matplotlib.pyplot as plt

    if not isinstance(evals, dict) or not evals:
        return None
    ckpts = sorted(evals)
    series = sorted({(b, k) for c in ckpts for b, d in evals[c].items() if isinstance(d, dict)
                     for k in d if k.startswith("pass@")})
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(series) + 2), 4))
    width = 0.8 / len(ckpts)
    for i, c in enumerate(ckpts):
        vals = [float(evals[c].get(b, {}).get(k, 0.0)) for b, k in series]
        bars = ax.bar([j + i * width for j in range(len(series))], vals, width, label=c)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks([j + width * (len(ckpts) - 1) / 2 for j in range(len(series))])
    ax.set_xticklabels([f"{b}\n{k}" for b, k in series])
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of tasks")
    ax.set_title("pass@k by checkpoint")
    ax.legend()
    return _png(fig)


def probe_table(probe: Any) -> dict[str, dict[str, float]]:
    """{checkpoint: {library or 'all': pass rate}} from metrics/probe.json: a nested dict
    with a `pass_rate` counts as a library; the checkpoint's own `pass_rate` as 'all'."""
    out: dict[str, dict[str, float]] = {}
    if not isinstance(probe, dict):
        return out

    def walk(d: dict, into: dict[str, float]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                if isinstance(v.get("pass_rate"), (int, float)):
                    into[k] = float(v["pass_rate"])
                else:
                    walk(v, into)

    for ckpt, d in probe.items():
        if not isinstance(d, dict):
            continue
        row: dict[str, float] = {}
        if isinstance(d.get("pass_rate"), (int, float)):
            row["all"] = float(d["pass_rate"])
        walk(d, row)
        if row:
            out[ckpt] = row
    return out


def fig_probe(probe: Any) -> Optional[bytes]:
    """Grouped bars: probe pass rate per library (and overall) per checkpoint."""
    import matplotlib.pyplot as plt

    table = probe_table(probe)
    if not table:
        return None
    libs = sorted({lib for row in table.values() for lib in row}, key=lambda x: (x != "all", x))
    ckpts = sorted(table)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(libs) + 2), 4))
    width = 0.8 / len(ckpts)
    for i, c in enumerate(ckpts):
        bars = ax.bar([j + i * width for j in range(len(libs))], [table[c].get(lib, 0.0) for lib in libs], width, label=c)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks([j + width * (len(ckpts) - 1) / 2 for j in range(len(libs))])
    ax.set_xticklabels(libs)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass rate")
    ax.set_title("probe results per library")
    ax.legend()
    return _png(fig)


def fig_quality(plots_dir: Path) -> Optional[bytes]:
    """Stacked histogram of quality scores, kept vs dropped (plots/filter/scores_hist.csv);
    the filter stage's own plots/filter/scores_hist.png (committed) when the CSV is absent."""
    import matplotlib.pyplot as plt

    rows = _read_csv(plots_dir / "filter" / "scores_hist.csv")
    if not rows:
        png = plots_dir / "filter" / "scores_hist.png"
        return png.read_bytes() if png.is_file() else None
    lo = [float(r["bin_start"]) for r in rows]
    w = [float(r["bin_end"]) - float(r["bin_start"]) for r in rows]
    kept = [int(r["kept"]) for r in rows]
    dropped = [int(r["dropped"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(lo, dropped, width=w, align="edge", color="#bbbbbb", label=f"dropped ({sum(dropped)})")
    ax.bar(lo, kept, width=w, align="edge", bottom=dropped, color="#2b7bba", label=f"kept ({sum(kept)})")
    ax.set_xlabel("quality score")
    ax.set_ylabel("files")
    ax.set_title("quality-score histogram")
    ax.legend()
    return _png(fig)


def fig_contamination(report: Any) -> Optional[bytes]:
    """Items removed per dataset and benchmark tasks with a similar item, against tau."""
    import matplotlib.pyplot as plt

    if not isinstance(report, dict) or not report.get("sweep"):
        return None
    sweep = sorted(report["sweep"], key=lambda r: r["tau"])
    taus = [r["tau"] for r in sweep]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for d in sorted({d for r in sweep for d in r.get("removed", {})}):
        a.plot(taus, [r["removed"].get(d, 0) for r in sweep], marker="o", label=d)
    for bm in sorted({x for r in sweep for x in r.get("tasks_similar", {})}):
        b.plot(taus, [r["tasks_similar"].get(bm, 0) for r in sweep], marker="o", label=bm)
    for ax, title in ((a, "items removed"), (b, "benchmark tasks with a similar item")):
        if "tau" in report:
            ax.axvline(report["tau"], color="#d62728", linestyle="--", linewidth=1, label=f"tau {report['tau']}")
        ax.set_xlabel("tau")
        ax.set_title(title)
        ax.legend()
    return _png(fig)


def fig_solution_loss(evals: Any) -> Optional[bytes]:
    """Grouped bars: solution loss (nats per token of the reference solutions) of each
    checkpoint on each benchmark (metrics/eval.json); lower is better."""
    import matplotlib.pyplot as plt

    if not isinstance(evals, dict) or not evals:
        return None
    ckpts = sorted(c for c in evals if isinstance(evals[c], dict))
    benches = sorted({b for c in ckpts for b, d in evals[c].items()
                      if isinstance(d, dict) and isinstance(d.get("solution_loss"), (int, float))})
    if not benches:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(benches) + 2), 4))
    width = 0.8 / len(ckpts)
    for i, c in enumerate(ckpts):
        vals = [float((evals[c].get(b) or {}).get("solution_loss") or 0.0) for b in benches]
        bars = ax.bar([j + i * width for j in range(len(benches))], vals, width, label=c)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks([j + width * (len(ckpts) - 1) / 2 for j in range(len(benches))])
    ax.set_xticklabels(benches)
    ax.set_ylim(0, 1.2 * max(float((evals[c].get(b) or {}).get("solution_loss") or 0.0) for c in ckpts for b in benches))
    ax.set_ylabel("nats per token (lower is better)")
    ax.set_title("solution loss by checkpoint")
    ax.legend(loc="upper left", ncol=len(ckpts))
    return _png(fig)


def all_zero(evals: Any, probe: Any) -> dict[str, Optional[str]]:
    """{figure: sentence} for the bar charts whose every value is 0 (a frame of empty bars
    says nothing): pass@k when no checkpoint passed a task, probes when none passed."""
    out: dict[str, Optional[str]] = {"pass_at_k": None, "probe": None}
    if isinstance(evals, dict) and evals:
        vals = [(c, b, k, v) for c, d in evals.items() if isinstance(d, dict) for b, m in d.items()
                if isinstance(m, dict) for k, v in m.items() if k.startswith("pass@") and isinstance(v, (int, float))]
        if vals and not any(v for *_, v in vals):
            keys = ", ".join(sorted({k for _, _, k, _ in vals}))
            out["pass_at_k"] = (f"Every pass metric ({keys}) is 0 for every checkpoint "
                                f"({', '.join(sorted({c for c, *_ in vals}))}) on every benchmark "
                                f"({', '.join(sorted({b for _, b, *_ in vals}))}): no generated solution passed "
                                "its tests, so there are no bars to draw. The solution loss below still "
                                "separates the checkpoints.")
    table = probe_table(probe)
    if table and not any(v for row in table.values() for v in row.values()):
        out["probe"] = (f"Every probe pass rate is 0 for every checkpoint ({', '.join(sorted(table))}): "
                        "no generated program passed its probe, so there are no bars to draw. The probe "
                        "solution loss and API top-k in the numbers above still separate the checkpoints.")
    return out


FIGURES = {
    "loss_curves": "Loss curves",
    "pass_at_k": "HumanEval / MBPP pass@k, base vs phi1",
    "solution_loss": "HumanEval / MBPP solution loss, base vs phi1",
    "probe": "Probe results per library",
    "quality_scores": "Quality-score histogram",
    "contamination_sweep": "Contamination sweep",
}


# --------------------------------------------------------------------------- tables


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """An HTML table; cells are escaped, floats given 4 significant digits."""
    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return f'<td>{"-" if v is None else str(v).lower()}</td>'
        if isinstance(v, (int, float)):
            return f'<td class="n">{v:.4g}</td>' if isinstance(v, float) else f'<td class="n">{v}</td>'
        return f"<td>{html.escape(str(v))}</td>"

    return (f'<table class="{cls}"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows) + "</table>")


EVAL_COLUMNS = [("n_tasks", "tasks run"), ("solution_loss", "solution loss"),
                ("solution_loss_task_mean", "sol. loss, task mean"), ("solution_tasks", "sol. tasks"),
                ("solution_truncated", "sol. truncated")]


def eval_table(evals: Any) -> str:
    """One row per checkpoint and benchmark of metrics/eval.json: pass@k, solution loss."""
    if not isinstance(evals, dict):
        return ""
    rows = [(c, b, m) for c, d in sorted(evals.items()) if isinstance(d, dict)
            for b, m in sorted(d.items()) if isinstance(m, dict)]
    if not rows:
        return ""
    passk = sorted({k for *_, m in rows for k in m if k.startswith("pass@")}, key=lambda k: (len(k), k))
    cols = [(k, k) for k in passk] + [(k, h) for k, h in EVAL_COLUMNS if any(k in m for *_, m in rows)]
    return _table(["checkpoint", "benchmark", *(h for _, h in cols)],
                  [[c, b, *(m.get(k) for k, _ in cols)] for c, b, m in rows], "numbers")


PROBE_COLUMNS = ("n_probes", "pass_rate", "api_validity", "solution_loss", "api_topk")


def probe_rows(probe: Any) -> list[list[Any]]:
    """One row per checkpoint of metrics/probe.json and library ('all' first): probes, pass
    rate, API validity, solution loss (nats/char), API top-k."""
    rows: list[list[Any]] = []
    if not isinstance(probe, dict):
        return rows
    for ckpt, d in sorted(probe.items()):
        if not isinstance(d, dict) or ckpt == "emergence":
            continue
        libs = d.get("by_library") or d.get("libraries") or {}
        rows.append([ckpt, "all", *(d.get(k) for k in PROBE_COLUMNS)])
        for lib, v in sorted(libs.items()):
            if isinstance(v, dict):
                rows.append([ckpt, lib, *(v.get(k) for k in PROBE_COLUMNS)])
    return rows


def emergence_rows(probe: Any) -> list[list[Any]]:
    """metrics/probe.json's `emergence`: finetuned minus base probe solution loss, paired
    by probe, with its 95% t interval; overall ('all') and per library."""
    em = probe.get("emergence") if isinstance(probe, dict) else None
    if not isinstance(em, dict) or not isinstance(em.get("solution_loss_delta"), dict):
        return []
    rows = []
    for lib, d in [("all", em), *sorted((em.get("by_library") or {}).items())]:
        delta = (d or {}).get("solution_loss_delta") or {}
        ci = delta.get("ci95") or {}
        rows.append([f"{em.get('finetuned')} - {em.get('base')}", lib, delta.get("n"), delta.get("mean"),
                     ci.get("low"), ci.get("high"), (d or {}).get("api_topk_delta")])
    return rows


def probe_numbers(probe: Any) -> str:
    rows = probe_rows(probe)
    if not rows:
        return ""
    table = _table(["checkpoint", "library", "probes", "pass rate", "API validity", "sol. loss (nats/char)",
                    "API top-k"], rows, "numbers")
    em = emergence_rows(probe)
    if em:
        table += _table(["emergence", "library", "probes", "sol. loss delta", "95% CI low", "95% CI high",
                         "API top-k delta"], em, "numbers")
    elif isinstance(probe.get("emergence"), dict) and probe["emergence"].get("note"):
        table += f"<p>{html.escape(probe['emergence']['note'])}.</p>"
    return table


def registry_versions(models: list[str]) -> tuple[dict[str, dict[str, dict[str, Any]]], str]:
    """({model: {alias: version record}}, why not) for the `champion` and `challenger` of
    each model in the MLflow registry: version, git commit, params hash, checkpoint hash,
    data hashes (`lineage.dvc.*`) and the recorded gate decision. Read only: a sqlite
    store that does not exist is not created."""
    from phi1.tracking import environ, tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        return {}, f"no MLflow store at {uri}"
    # a server that is down: one short try, not MLflow's minutes of retries
    with environ({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}):
        return _registry_versions(uri, models)


def _registry_versions(uri: str, models: list[str]) -> tuple[dict[str, dict[str, dict[str, Any]]], str]:
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from phi1.engines.model_registry import CHALLENGER, CHAMPION, DECISION_TAG

        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for model in models:
            for alias in (CHAMPION, CHALLENGER):
                try:
                    mv = c.get_model_version_by_alias(model, alias)
                except MlflowException as exc:  # no such model or alias: nothing to show
                    if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                        continue
                    raise
                tags = dict(mv.tags)
                try:
                    decision = json.loads(tags.get(DECISION_TAG) or "null")
                except ValueError:
                    decision = None
                out.setdefault(model, {})[alias] = {
                    "version": str(mv.version), "git": tags.get("git.commit", "-"),
                    "dirty": tags.get("git.dirty", "-"), "params": tags.get("params.sha256", "-"),
                    "checkpoint": tags.get("checkpoint.hash", "-"),
                    "validation": tags.get("validation.status", "-"),
                    "experiment": tags.get("phi1.experiment", ""),
                    "data": {k[len("lineage.dvc."):]: v for k, v in tags.items() if k.startswith("lineage.dvc.")},
                    "passes": {k: v for k, v in tags.items() if _is_number(v) and (
                        (k.startswith("eval.") and ".pass_at_" in k) or k == "probe.pass_rate")},
                    "decision": decision if isinstance(decision, dict) else None,
                }
        return out, "" if out else f"no champion or challenger registered in {uri}"
    except Exception as exc:  # an unreachable server, a store of another schema: say so
        return {}, f"MLflow registry {uri} not readable ({' '.join(str(exc).split())[:200]})"


def _decision_text(d: Optional[dict[str, Any]]) -> str:
    if not d:
        return "-"
    what = "would pass" if d.get("dry_run") else ("accepted" if d.get("accepted") else "refused")
    if d.get("dry_run") and not d.get("accepted"):
        what = "would be refused"
    failing = d.get("failing") or []
    return f"{d.get('action', 'promote')} {what}" + (f" (failing: {', '.join(failing)})" if failing else "") \
        + (f", {d.get('at')}" if d.get("at") else "")


def champion_passes_nothing(model: str, record: Optional[dict[str, Any]]) -> Optional[str]:
    """A sentence when the champion's every pass metric (pass@k per benchmark, probe pass
    rate; its version tags) is 0, else None."""
    passes = (record or {}).get("passes") or {}
    if not passes or any(float(v) for v in passes.values()):
        return None
    return (f"The champion {model} v{record['version']} passed nothing: every pass metric of it "
            f"({', '.join(sorted(passes))}) is 0. It holds `champion` on the other gates (solution loss, and "
            "pass-rate floors register.min_pass_at_1 / min_probe_pass_rate that allow 0).")


def table3_table(t3: Any) -> str:
    """Table 3 of phi-1 from reports/eval/table3.json: per tau, checkpoint and benchmark,
    the tasks similar / not similar to the training data with their counts and scores."""
    rows = (t3 or {}).get("rows") if isinstance(t3, dict) else None
    if not rows:
        return ""
    passk = sorted({k for r in rows for k in r if k.startswith("pass@")}, key=lambda k: (len(k), k))
    body = [[r.get("tau"), r.get("checkpoint"), r.get("benchmark"), r.get("subset", "").replace("_", " "),
             r.get("n_tasks"), *(r.get(k) for k in passk), r.get("solution_tasks"), r.get("solution_loss")]
            for r in sorted(rows, key=lambda r: (-r["tau"], r["benchmark"], r["checkpoint"], r["subset"] != "similar"))]
    note = (f"<p>Among the tasks evaluated (evaluate.limit {t3.get('limit')}: pass@k over <i>tasks</i>; solution "
            f"loss over <i>loss tasks</i>). {html.escape(str(t3.get('rule', '')))}.</p>")
    return note + _table(["tau", "checkpoint", "benchmark", "subset", "tasks", *passk, "loss tasks", "solution loss"],
                         body, "numbers")


def models_section(register: Any, registry: dict[str, dict[str, dict[str, Any]]], why_not: str) -> str:
    """HTML: the registered versions and the gates' decisions (metrics/register.json), and
    the champion and challenger with their lineage (the MLflow registry)."""
    parts: list[str] = []
    if isinstance(register, dict) and register:
        rows = []
        for model, v in sorted(register.items()):
            if not isinstance(v, dict):
                continue
            state = ("promoted to champion" if v.get("promoted") else "promotable (gates pass)"
                     if v.get("promotable") else "refused by gates" if "promotable" in v else "registered")
            champ = v.get("champion")
            rows.append([model, f"v{v.get('version')}", v.get("checkpoint"), state,
                         f"v{champ}" if champ is not None else ("none" if "champion" in v else "-"),
                         v.get("gates_failed", "-")])
        parts.append("<h3>Registered by the last run (metrics/register.json)</h3>"
                     + _table(["model", "version", "checkpoint", "decision", "champion then", "gates failed"], rows))
        for model, v in sorted(register.items()):
            gates = (v or {}).get("gates") if isinstance(v, dict) else None
            if not isinstance(gates, dict) or not gates:
                continue
            grows = [[name, g.get("verdict"), g.get("direction") or "-", g.get("candidate"), g.get("champion"),
                      g.get("rule"), g.get("note")] for name, g in gates.items() if isinstance(g, dict)]
            parts.append(f"<h3>Gates of {html.escape(model)} v{html.escape(str(v.get('version')))} "
                         "against the champion</h3>"
                         + _table(["gate", "verdict", "better", "candidate", "champion", "rule", "note"], grows, "gates"))
    else:
        parts.append("<p>Not available: metrics/register.json does not exist (the register stage has not run).</p>")
    if registry:
        rows = []
        for model, aliases in sorted(registry.items()):
            for alias, r in aliases.items():
                git = r["git"][:10] + (" (dirty)" if r["dirty"] == "true" else "")
                rows.append([model, alias, f"v{r['version']}", git, r["params"][:12], _short(r["checkpoint"]),
                             r["validation"], r["experiment"] or "main line", _decision_text(r["decision"])])
        parts.append("<h3>Champion and challenger (MLflow registry)</h3>"
                     + _table(["model", "alias", "version", "git commit", "params.yaml sha256", "checkpoint",
                               "validation", "from", "decision"], rows, "models"))
        for model, aliases in sorted(registry.items()):
            if (zero := champion_passes_nothing(model, aliases.get("champion"))):
                parts.append(f'<p class="allzero">{html.escape(zero)}</p>')
        for model, aliases in sorted(registry.items()):
            paths = sorted(set().union(*(r["data"] for r in aliases.values())))
            if not paths:
                continue
            names = list(aliases)
            drows = []
            for path in paths:
                hashes = [aliases[a]["data"].get(path, "-") for a in names]
                drows.append([path, *(_short(h) if h != "-" else h for h in hashes),
                              "same" if len(set(hashes)) == 1 else "differs"])
            parts.append(f"<h3>Data hashes of {html.escape(model)} (DVC, from dvc.lock)</h3>"
                         + _table(["output", *(f"{a} v{aliases[a]['version']}" for a in names),
                                   *(["champion vs challenger"] if len(names) > 1 else ["-"])], drows, "hashes"))
    else:
        parts.append(f"<p>Registry lineage not shown: {html.escape(why_not)}.</p>")
    return '<section id="models"><h2>Models: champion, challenger and the gates</h2>' + "".join(parts) + "</section>"


def validation_section(validation_dir: Path, out: Path) -> str:
    """HTML: each dataset's Great Expectations result (reports/validation/summary.json),
    linking the offline index and per-dataset pages the validate stage writes."""
    import os

    summary = _read_json(validation_dir / "summary.json")
    title = "Data validation (Great Expectations)"
    if not isinstance(summary, dict) or not summary:
        return (f'<section id="validation" class="missing"><h2>{title}</h2><p>Not available: '
                f"{html.escape(str(validation_dir))}/summary.json does not exist.</p></section>")
    rel = Path(os.path.relpath(validation_dir.resolve(), Path(out).resolve()))
    rows = []
    for name, r in summary.items():
        if not isinstance(r, dict):
            continue
        failed = r.get("failed") if isinstance(r.get("failed"), list) else []
        crit = sum(1 for f in failed if (f or {}).get("severity", "critical") == "critical")
        page = next(iter(sorted((validation_dir / "data_docs" / "validations" / name).rglob("*.html"))), None) \
            if (validation_dir / "data_docs").is_dir() else None
        link = (f'<a href="{html.escape((rel / page.relative_to(validation_dir)).as_posix())}">{html.escape(name)}</a>'
                if page else html.escape(name))
        rows.append(f"<tr><td>{link}</td><td>{'passed' if r.get('success') else 'FAILED'}</td>"
                    f"<td>{r.get('evaluated', '-')}</td><td>{len(failed)}</td><td>{crit}</td></tr>")
    index = validation_dir / "index.html"
    more = (f' &middot; <a href="{html.escape((rel / "index.html").as_posix())}">all suites</a>' if index.is_file() else "")
    return (f'<section id="validation"><h2>{title}</h2><table class="numbers"><tr><th>dataset</th><th>suite</th>'
            "<th>expectations</th><th>failed</th><th>critical</th></tr>" + "".join(rows) + "</table>"
            f'<p class="src">from {html.escape(str(validation_dir))}/summary.json{more}</p></section>')


def ablation_section(ablation_dir: Path) -> tuple[Optional[bytes], str]:
    """(figure PNG, HTML) of `phi1 ablate`'s results (reports/ablation), or (None, '')."""
    fig = ablation_dir / "figure.png"
    rows = _read_csv(ablation_dir / "results.csv")
    if not fig.is_file() or not rows:
        return None, ""
    png = fig.read_bytes()
    cols = [c for c in rows[0] if c not in ("exp", "exp_rev") and not c.endswith("_truncated")]

    def cell(v: str) -> str:
        return html.escape(f"{float(v):.4g}" if _is_number(v) else (v or "-"))

    table = ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
             + "</table>")
    try:  # the noise verdicts (`phi1 ablate --seeds`), when results.json has them
        lines = json.loads((ablation_dir / "results.json").read_text()).get("verdicts") or []
    except (OSError, ValueError):
        lines = []
    if lines:
        table += "<ul>" + "".join(f"<li>{html.escape(str(x))}</li>" for x in lines) + "</ul>"
    b64 = base64.b64encode(png).decode()
    title = "Data-quality ablation (phi1 ablate; cf. the paper's Figure 2.1)"
    section = (f'<section id="ablation"><h2>{title}</h2>'
               f'<img alt="{title}" src="data:image/png;base64,{b64}">{table}'
               f'<p class="src">from {html.escape(str(ablation_dir))}/results.csv &middot; <a href="ablation.png">ablation.png</a>. '
               "Solution loss per character is comparable across variants (each trains its own tokenizer); "
               "per-token losses and validation losses are not.</p></section>")
    return png, section


def build(out: str | Path = "reports/report", plots_dir: str | Path = "plots",
          eval_path: str | Path = "metrics/eval.json", probe_path: str | Path = "metrics/probe.json",
          contamination_path: str | Path = "reports/contamination.json",
          ablation_dir: str | Path = "reports/ablation", register_path: str | Path = "metrics/register.json",
          validation_dir: str | Path = "reports/validation", registry: bool = True,
          table3_path: str | Path = "reports/eval/table3.json") -> dict[str, str]:
    """Write `out`/index.html and `out`/<figure>.png; return {figure: 'written', 'all zero: ...'
    or why it is missing}. The page holds, before the figures, the numbers of eval and probe
    per checkpoint, the registered versions with the gates' decisions (metrics/register.json)
    and, when `registry`, the champion and challenger with their git commit and data hashes
    from the MLflow registry; after them the validation results. A bar chart whose values are
    all 0 is replaced by a sentence saying so. The ablation section (figure + table) is added
    only when `ablation_dir` holds results."""
    import matplotlib

    matplotlib.use("Agg")
    plots_dir, out = Path(plots_dir), Path(out)
    evals, probe = _read_json(Path(eval_path)), _read_json(Path(probe_path))
    zero = all_zero(evals, probe)
    made = {
        "loss_curves": (fig_loss(plots_dir), f"{plots_dir}/pretrain/train.csv or {plots_dir}/finetune/train.csv"),
        "pass_at_k": (None if zero["pass_at_k"] else fig_passk(evals), str(eval_path)),
        "solution_loss": (fig_solution_loss(evals), str(eval_path)),
        "probe": (None if zero["probe"] else fig_probe(probe), str(probe_path)),
        "quality_scores": (fig_quality(plots_dir), f"{plots_dir}/filter/scores_hist.csv"),
        "contamination_sweep": (fig_contamination(_read_json(Path(contamination_path))), str(contamination_path)),
    }
    status = {name: "written" if png else (f"all zero: {zero[name]}" if zero.get(name) else f"missing: no {src}")
              for name, (png, src) in made.items()}
    sections = []
    for name, (png, src) in made.items():
        title = html.escape(FIGURES[name])
        if png:
            b64 = base64.b64encode(png).decode()
            sections.append(f'<section id="{name}"><h2>{title}</h2>'
                            f'<img alt="{title}" src="data:image/png;base64,{b64}">'
                            f'<p class="src">from {html.escape(src)} &middot; <a href="{name}.png">{name}.png</a></p></section>')
        elif zero.get(name):
            sections.append(f'<section id="{name}" class="zero"><h2>{title}</h2>'
                            f'<p class="allzero">{html.escape(zero[name])}</p>'
                            f'<p class="src">from {html.escape(src)}; the numbers are in the tables above.</p></section>')
        else:
            sections.append(f'<section id="{name}" class="missing"><h2>{title}</h2>'
                            f'<p>Not available: {html.escape(src)} does not exist (or holds no data).</p></section>')
    numbers = [t for t in (("Evaluation per checkpoint and benchmark", eval_table(evals), eval_path),
                           ("Probes per checkpoint and library", probe_numbers(probe), probe_path),
                           ("Table 3: tasks similar / not similar to the training data",
                            table3_table(_read_json(Path(table3_path))), table3_path)) if t[1]]
    numbers_html = ('<section id="numbers"><h2>Numbers</h2>'
                    + "".join(f"<h3>{h}</h3>{t}<p class=\"src\">from {html.escape(str(src))}</p>" for h, t, src in numbers)
                    + "</section>") if numbers else \
        f'<section id="numbers" class="missing"><h2>Numbers</h2><p>Not available: no {html.escape(str(eval_path))} ' \
        f"or {html.escape(str(probe_path))}.</p></section>"
    register = _read_json(Path(register_path))
    names = sorted(register) if isinstance(register, dict) else []
    lineage, why_not = registry_versions(names) if (registry and names) else \
        ({}, "not asked for (--no-registry)" if names else "no registered model in metrics/register.json")
    models_html = models_section(register, lineage, why_not)
    validation_html = validation_section(Path(validation_dir), out)
    ablation_png, ablation_html = ablation_section(Path(ablation_dir))
    if ablation_png:
        sections.append(ablation_html)
        status["ablation"] = "written"
    missing = [FIGURES[n] for n, s in status.items() if s.startswith("missing")]
    zeros = [FIGURES[n] for n, s in status.items() if s.startswith("all zero")]
    drawn = sum(1 for s in status.values() if s == "written") - (1 if ablation_png else 0)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>phi1 report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}}
img{{max-width:100%;border:1px solid #ddd}} table{{border-collapse:collapse;font-size:small;margin-top:.5em}}
td,th{{border:1px solid #ddd;padding:2px 6px;text-align:left}} td.n{{text-align:right}}
.missing{{color:#888}} .src{{font-size:small;color:#666}} .allzero{{padding:1em;background:#f6f6f6;border-left:4px solid #999}}</style>
</head><body><h1>phi1 report</h1>
<p>Written {html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))}. {drawn} of {len(made)} figures{' + the ablation' if ablation_png else ''};
all zero (a sentence instead of a chart): {html.escape(", ".join(zeros)) or "none"};
missing: {html.escape(", ".join(missing)) or "none"}.</p>
{numbers_html}
{models_html}
{chr(10).join(sections)}
{validation_html}
</body></html>
"""
    with atomic_dir(out) as tmp:
        for name, (png, _) in made.items():
            if png:
                (tmp / f"{name}.png").write_bytes(png)
        if ablation_png:
            (tmp / "ablation.png").write_bytes(ablation_png)
        (tmp / "index.html").write_text(page)
    return status


# --------------------------------------------------------------------------- dvc plots, offline

VEGA_BUILDS = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")
"""The UMD builds `dvc plots show` loads from a CDN (vega 5, vega-lite 5, vega-embed 6),
under an `npm ci` of vega/package.json."""


def dvc_plots_template(node_modules: str | Path) -> str:
    """An HTML template for `dvc plots show` (`dvc config plots.html_template`) with vega,
    vega-lite and vega-embed inlined from `node_modules`, so the charts draw offline. It has
    DVC's `{plot_divs}` and `{refresh_tag}` but not `{scripts}`, where DVC would put its CDN
    <script> tags."""
    from phi1.errors import Phi1Error

    node_modules = Path(node_modules)
    scripts = []
    for rel in VEGA_BUILDS:
        path = node_modules / rel
        if not path.is_file():
            raise Phi1Error(f"{path} not found (install it: npm ci --prefix {node_modules.parent})")
        name = rel.split("/")[0]
        version = json.loads((node_modules / name / "package.json").read_text()).get("version", "?")
        # a literal "</script" inside the code would end the element early
        code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")
        scripts.append(f"<!-- {name} {version} -->\n<script>{code}</script>")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n{refresh_tag}\n<title>DVC plots (phi1)</title>\n"
            + "\n".join(scripts)
            + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


__all__ = ["run_rows", "model_rows", "compare_table", "build", "probe_table", "all_zero", "eval_table",
           "table3_table", "champion_passes_nothing",
           "models_section", "registry_versions", "dvc_plots_template", "FIGURES"]
