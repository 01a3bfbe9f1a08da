"""`phi1 decontaminate`: prune training items that look like HumanEval or MBPP, and report how many.

    phi1 decontaminate                            # params.yaml section `decontaminate`
    phi1 decontaminate -S decontaminate.tau=0.85

Reads data/codetextbook/filtered, data/codetextbook/textbook and data/codeexercises;
writes their pruned copies to data/pruned/{filtered,textbook,exercises} (same columns plus
`contamination_score`, the item's highest detector score; with `prune_raw`, data/raw too,
into data/pruned/raw, for the ablation's unfiltered variant), reports/contamination.json,
reports/contamination_sweep.png and metrics/decontaminate.json.

The three detectors of phi-1 (section 5), each scoring an item against every task in [0, 1]:
- ngram: share of the task's 13-grams (normalised words) found in the item;
- embedding: cosine similarity of the item's functions and the task (filter's embedding);
- ast: AST match rate, 1 - tree edit distance / size, of the item's functions and the
  task's entry-point function, after normalising names and layout away, computed only
  for pairs that size, label and sequence bounds (lossless) and the embedding top-k let
  through (phi1.decontaminate.detect).
An item is pruned when any detector scores it at or above tau against any task. The
sweep table repeats the counts for each threshold in `sweep`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from phi1.config import DecontaminateConfig
from phi1.errors import Phi1Error
from phi1.io import check_output, outputs, read_table, write_json, write_shards

SHARD_SIZE = 2000
CHUNK_ITEMS = 2000
"""Items scored at a time: the parsed trees of one chunk are all that is held, so memory
stays flat with the corpus (items are independent; a chunk changes no score)."""


def _load(datasets: Mapping[str, str | Path]) -> dict[str, pa.Table]:
    from phi1.decontaminate.units import COLUMNS

    out = {}
    for name, path in datasets.items():
        if name not in COLUMNS:
            raise Phi1Error(f"decontaminate: unknown dataset {name!r}; known: {', '.join(COLUMNS)}")
        p = Path(path)
        if not p.exists():
            raise Phi1Error(f"decontaminate: dataset {name} not found: {p}")
        table = read_table(p)
        missing = [c for c in ["id", *COLUMNS[name]] if c not in table.column_names]
        if missing:
            raise Phi1Error(f"decontaminate: dataset {name} at {p} lacks column {missing[0]!r}")
        out[name] = table
    return out


SCORER_VERSION = 1
"""Bump when a detector changes what it computes: it invalidates the cached results."""


def score(cfg: Any, tables: Mapping[str, pa.Table], progress: bool = True) -> dict[str, Any]:
    """Run the detectors; return flags, per-item maximum scores, AST stats and timings.

    A dataset's results are cached (under cfg.cache_path) by its content, the tasks and
    the detector settings, so rerunning after only `synthesize` changed does not parse
    and score the unchanged filtered corpus again."""
    from phi1.decontaminate.ngram import NGramIndex
    from phi1.decontaminate.references import load_references

    timings: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    refs = load_references(cfg.benchmarks)
    timings["references"] = time.perf_counter() - t0
    ctx = _Context(cfg, refs, progress, timings)
    ctx.index = NGramIndex([r.text for r in refs], cfg.ngram_n) if "ngram" in cfg.detectors else None
    flags: list[dict[str, Any]] = []
    item_max: dict[str, list[float]] = {}
    ast_stats: dict[str, dict] = {}
    cached: list[str] = []
    for name, table in tables.items():
        key = _cache_key(cfg, refs, name, table)
        got = _cache_get(cfg.cache_path, key)
        if got is None:
            got = _score_dataset(ctx, name, table)
            _cache_put(cfg.cache_path, key, got)
        else:
            cached.append(name)
        flags.extend(got["flags"])
        item_max[name] = got["item_max"]
        if got["ast"] is not None:
            ast_stats[name] = got["ast"]
    flags.sort(key=lambda f: (-f["score"], f["dataset"], f["id"], f["task_id"], f["detector"]))
    benchmarks = {b: sum(1 for r in refs if r.benchmark == b) for b in cfg.benchmarks}
    return {"flags": flags, "item_max": item_max, "ast": ast_stats, "benchmarks": benchmarks, "cached": cached,
            "timings": {k: round(v, 2) for k, v in timings.items()}}


class _Context:
    """What every dataset's scoring shares: config, tasks, n-gram index, embedder."""

    def __init__(self, cfg, refs, progress, timings):
        self.cfg, self.refs, self.progress, self.timings = cfg, refs, progress, timings
        self.index = None
        self.embedder = None
        self.ref_vecs = None

    def embed(self, texts: list[str], desc: str):
        if self.embedder is None:
            from phi1.engines.embed import load_embedder

            c = self.cfg
            self.embedder = load_embedder(c.embedding, max_tokens=c.max_tokens, batch_size=c.batch_size)
            self.ref_vecs = _task_vectors(self.embedder, self.refs, c.cache_path, self.progress)
        return self.embedder.embed(texts, progress=self.progress, desc=desc)


def _score_dataset(ctx: _Context, name: str, table: pa.Table) -> dict[str, Any]:
    from phi1.decontaminate import detect
    from phi1.decontaminate.units import COLUMNS

    cfg = ctx.cfg
    ids = table.column("id").to_pylist()
    best = [0.0] * len(ids)
    flags: dict[tuple, dict[str, Any]] = {}
    stats = detect.AstStats() if "ast" in cfg.detectors else None
    n_units = 0
    for start in range(0, table.num_rows, CHUNK_ITEMS):
        rows = table.slice(start, CHUNK_ITEMS).select(COLUMNS[name]).to_pylist()
        n_units += _score_chunk(ctx, name, rows, start, ids, best, flags, stats)
    ast_stats = stats.as_dict() | {"units": n_units} if stats is not None else None
    return {"flags": list(flags.values()), "item_max": best, "ast": ast_stats}


def _score_chunk(ctx: _Context, name: str, rows: list[dict[str, Any]], offset: int, ids: list[str],
                 best: list[float], flags: dict[tuple, dict[str, Any]], stats) -> int:
    """Score rows[i] = item offset + i into `best` and `flags`; return its function count."""
    from phi1.decontaminate import detect
    from phi1.decontaminate.units import extract_units, item_text

    cfg, refs, timings = ctx.cfg, ctx.refs, ctx.timings
    floor = cfg.floor

    def flag(item, unit, ref, detector, value):
        # One flag per (item, task, detector): the best unit of the item.
        item += offset
        key = (ids[item], refs[ref].task_id, detector)
        if key not in flags or value > flags[key]["score"]:
            flags[key] = {"dataset": name, "id": ids[item], "unit": unit, "benchmark": refs[ref].benchmark,
                          "task_id": refs[ref].task_id, "detector": detector, "score": round(float(value), 4)}

    if ctx.index is not None:
        t = time.perf_counter()
        for i, row in enumerate(rows):
            for r, value in ctx.index.scores(item_text(name, row)).items():
                best[offset + i] = max(best[offset + i], value)
                if value >= floor - detect.EPS:
                    flag(i, None, r, "ngram", value)
        timings["ngram"] += time.perf_counter() - t
    embed_here = "embedding" in cfg.detectors and name in cfg.embedding_datasets
    units: list = []
    if "ast" in cfg.detectors or embed_here:
        t = time.perf_counter()
        units = extract_units(name, rows, want_source=embed_here, workers=cfg.workers)
        timings["parse"] += time.perf_counter() - t
        allowed = None
        if embed_here:
            t = time.perf_counter()
            vecs = ctx.embed([u.source or "" for u in units], f"embed {name}")
            if len(units):
                for u, value in enumerate((vecs @ ctx.ref_vecs.T).max(axis=1)):
                    item = offset + units[u].item
                    best[item] = max(best[item], float(value))
            top_k = cfg.ast_top_k if "ast" in cfg.detectors else None
            pairs, allowed = detect.embedding_pairs(vecs, ctx.ref_vecs, floor, top_k)
            for u, r, value in pairs:
                flag(units[u].item, f"{units[u].name}@{units[u].lineno}", r, "embedding", value)
            timings["embedding"] += time.perf_counter() - t
        if "ast" in cfg.detectors:
            seconds = stats.seconds
            pairs = detect.ast_pairs(units, refs, floor, allowed=allowed, min_nodes=cfg.ast_min_nodes,
                                     progress=ctx.progress, stats=stats)
            for u, r, value in pairs:
                item = offset + units[u].item
                best[item] = max(best[item], value)
                flag(units[u].item, f"{units[u].name}@{units[u].lineno}", r, "ast", value)
            timings["ast"] += stats.seconds - seconds
    return len(units)


def _cache_key(cfg: Any, refs, name: str, table: pa.Table) -> str:
    import hashlib
    import json

    from phi1.decontaminate.units import COLUMNS

    h = hashlib.sha256()
    settings = {k: getattr(cfg, k) for k in ("sweep", "tau", "detectors", "ngram_n", "ast_top_k", "ast_min_nodes")}
    settings["floor"] = cfg.floor
    if "embedding" in cfg.detectors and name in cfg.embedding_datasets:
        settings.update(embedding=cfg.embedding, max_tokens=cfg.max_tokens, embedded=True)
    h.update(repr((SCORER_VERSION, name, sorted(settings.items()), [(r.task_id, r.text) for r in refs])).encode())
    for col in ["id", *COLUMNS[name]]:  # json.dumps of the whole column, written a chunk at a time
        h.update(b"[")
        for start in range(0, table.num_rows, CHUNK_ITEMS):
            part = json.dumps(table.column(col).slice(start, CHUNK_ITEMS).to_pylist())[1:-1]
            h.update(((", " if start else "") + part).encode())
        h.update(b"]")
    return h.hexdigest()[:32]


def _cache_get(cache_path: str | None, key: str) -> dict[str, Any] | None:
    import json

    if not cache_path:
        return None
    p = Path(cache_path) / f"scores-{key}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _cache_put(cache_path: str | None, key: str, value: dict[str, Any]) -> None:
    if cache_path:
        write_json(Path(cache_path) / f"scores-{key}.json", value)


def _task_vectors(embedder, refs, cache_path: str | None, progress: bool):
    """Embeddings of the benchmark tasks, cached by embedding spec and task texts."""
    import hashlib
    import json

    import numpy as np

    from phi1.io import atomic_file

    texts = [r.text for r in refs]
    path = None
    if cache_path:
        key = hashlib.sha256(json.dumps([embedder.describe(), texts], sort_keys=True).encode()).hexdigest()[:24]
        path = Path(cache_path) / f"tasks-{key}.npy"
        if path.is_file():
            try:
                vecs = np.load(path)
                if vecs.shape == (len(texts), embedder.dim):
                    return vecs
            except (OSError, ValueError):
                pass  # a damaged cache entry is simply recomputed
    vecs = embedder.embed(texts, progress=progress, desc="embed tasks")
    if path is not None:
        with atomic_file(path, "wb") as fh:
            np.save(fh, vecs)
    return vecs


def run(cfg: DecontaminateConfig, datasets: Mapping[str, str | Path], out: str | Path, report_path: str | Path,
        plot_path: str | Path, metrics_path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the stage; return the metrics it wrote."""
    from phi1.decontaminate.report import plot_sweep, removed_ids, sweep, task_scores
    from phi1.tracking import numeric_metrics, split_run_figures, stage_run, tracked_metrics

    start = time.perf_counter()
    tables = _load(datasets)
    inputs = list(datasets.values())
    for path, kind in ((out, "dir"), (report_path, "file"), (metrics_path, "file"), (plot_path, "file")):
        check_output(path, inputs, kind)  # before the slow scoring
    with stage_run("decontaminate", cfg, inputs=inputs) as _, outputs(inputs) as staged:
        import mlflow

        result = score(cfg, tables, progress)
        flags = result["flags"]
        table = sweep(flags, cfg.sweep, list(tables), result["benchmarks"], cfg.detectors)
        gone = removed_ids(flags, cfg.tau)
        at_tau = sweep(flags, [cfg.tau], list(tables), result["benchmarks"], cfg.detectors)[0]

        tmp = staged.dir(out)  # committed with the report and metrics below
        for name, t in tables.items():
            keep = [i not in gone.get(name, set()) for i in t.column("id").to_pylist()]
            scores = pa.array(result["item_max"][name], type=pa.float64())
            pruned = t.append_column("contamination_score", scores).filter(pa.array(keep, type=pa.bool_()))
            (tmp / name).mkdir()
            rows = (r for batch in pruned.to_batches(max_chunksize=SHARD_SIZE) for r in batch.to_pylist())
            write_shards(tmp / name, rows, shard_size=SHARD_SIZE, schema=pruned.schema)

        n_items = {name: t.num_rows for name, t in tables.items()}
        metrics = {
            "tau": cfg.tau,
            "items": n_items,
            "removed": at_tau["removed"],
            "kept": {d: n_items[d] - at_tau["removed"][d] for d in tables},
            "tasks_similar": at_tau["tasks_similar"],
            "tasks_similar_to_exercises": at_tau["tasks_similar_to_exercises"],
            "removed_by_detector": {det: v["removed"] for det, v in at_tau["by_detector"].items()},
            "benchmark_tasks": result["benchmarks"],
            "ast_pairs": result["ast"],
            "seconds": result["timings"],
            "cached": result["cached"],
        }
        report = {
            "tau": cfg.tau,
            "detectors": list(cfg.detectors),
            "ngram_n": cfg.ngram_n,
            "embedding": cfg.embedding,
            "embedding_datasets": list(cfg.embedding_datasets),
            "ast_top_k": cfg.ast_top_k,
            "ast_min_nodes": cfg.ast_min_nodes,
            "benchmark_tasks": result["benchmarks"],
            "items": n_items,
            "at_tau": at_tau,
            "sweep": table,
            "ast_pairs": result["ast"],
            "n_flagged": len(flags),
            # per task, its highest score (at or above score_floor): evaluate's Table 3 split
            "score_floor": cfg.floor,
            "task_scores": task_scores(flags),
            "flagged": flags[: cfg.max_flagged_in_report],
        }
        staged.json(report_path, split_run_figures(report)[0])  # without timings, like the metrics
        plot_sweep(table, result["benchmarks"], plot_path)
        metrics["seconds"]["total"] = round(time.perf_counter() - start, 2)
        staged.json(metrics_path, tracked_metrics(metrics))  # without timings: those go to MLflow
        staged.commit()

        mlflow.log_metrics(numeric_metrics(metrics))
        for row in table:
            step = int(round(row["tau"] * 100))
            for d, v in row["removed"].items():
                mlflow.log_metric(f"sweep.removed.{d}", v, step=step)
            for b, v in row["tasks_similar"].items():
                mlflow.log_metric(f"sweep.tasks_similar.{b}", v, step=step)
        mlflow.log_artifact(str(report_path), "decontaminate")
        mlflow.log_artifact(str(plot_path), "decontaminate")
    return metrics



__all__ = ["run", "score"]
