"""`phi1 filter`: the phi-1 paper's quality classifier.

    phi1 filter                                   # params.yaml section `filter`
    phi1 filter -S filter.threshold=null -S filter.top_fraction=0.3

The paper had GPT-4 rate ~100k files for "educational value for a student whose goal is
to learn basic coding concepts", then trained a random forest on a pretrained code
model's embeddings to predict that rating for every file. Here:

1. read the vector of every file of data/raw from data/embeddings (the `embed` stage,
   checked row by row against data/raw's ids and texts; the annotated files are a
   subset), so a new threshold or forest reruns this stage alone, in seconds;
2. hold out `test_fraction` of the annotations (stratified) and report precision, recall,
   F1 (label 1, at probability 0.5) and ROC-AUC of a forest trained on the rest;
3. refit the forest on all annotations (the model that is saved and used, as recorded in
   metrics `refit`), score every file (quality_score = P(label 1));
4. keep files with quality_score >= threshold, or the top `top_fraction` of them.

With `filter.refine.embedding` set, step 3 becomes a cascade (phi1.filter.refine): the
files scored near the threshold, and the annotated ones, are embedded again with that
model, and a second forest, trained on the annotations' new vectors, rescores the former.
This stage then embeds (a fraction of the files, cached per file).

Outputs: the kept rows of data/raw plus `quality_score`; models/quality (classifier.skops
+ feature_spec.json, and refine_classifier.skops with a second pass: enough to score new
files with `load_quality_model`); the metrics JSON; a kept-vs-dropped histogram (PNG +
CSV). Everything goes to one MLflow run.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from phi1.config import FilterConfig, RefineConfig
from phi1.engines.embed import Embedder, load_embedder
from phi1.engines.vectors import content_sha256, read_vectors
from phi1.errors import Phi1Error
from phi1.io import atomic_file, check_output, dataset_shards, outputs, write_shards

MIN_ANNOTATIONS = 10
"""Fewer rated files than this cannot train and evaluate a classifier meaningfully."""
SHARD_SIZE = 2000
"""Rows per output parquet shard (as ingest writes data/raw)."""
CLASSIFIER_FILE = "classifier.skops"
REFINE_CLASSIFIER_FILE = "refine_classifier.skops"
SPEC_FILE = "feature_spec.json"
# skops refuses to load types it has not been told to trust; a forest's node storage is
# one of them. We only load files this stage wrote (see skops' own note on this type).
SKOPS_TRUSTED = ["sklearn.tree._tree.Tree"]
HIST_BINS = 20


# --------------------------------------------------------------------------- inputs


@dataclass
class Annotations:
    ids: list[str]
    labels: np.ndarray  # (n,) int64 in {0, 1}
    scores: np.ndarray | None  # (n,) float64, for messages only


def read_annotations(path: Path) -> Annotations:
    """The id and label columns of data/annotations, checked for what training needs."""
    files = dataset_shards(path, "annotations", "annotate")
    schema = pq.read_schema(files[0])
    for col in ("id", "label"):
        if col not in schema.names:
            raise Phi1Error(f"annotations {path}: missing column {col!r} (has {', '.join(schema.names)})")
    cols = ["id", "label"] + (["score"] if "score" in schema.names else [])
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
    ids = table.column("id").to_pylist()
    labels_raw = table.column("label").to_pylist()
    scores = np.asarray(table.column("score").to_pylist(), dtype=np.float64) if "score" in cols else None
    n = len(ids)
    if n < MIN_ANNOTATIONS:
        raise Phi1Error(
            f"annotations {path}: {n} rated files, need at least {MIN_ANNOTATIONS} to train the classifier "
            "(raise annotate.sample_size)"
        )
    bad = [v for v in labels_raw if v not in (0, 1)]
    if bad:
        raise Phi1Error(f"annotations {path}: label must be 0 or 1, found {bad[0]!r} ({len(bad)} such rows)")
    dups = [i for i, c in Counter(ids).items() if c > 1]
    if dups:
        raise Phi1Error(f"annotations {path}: {n - len(set(ids))} duplicate ids (e.g. {dups[0]})")
    labels = np.asarray(labels_raw, dtype=np.int64)
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        only = int(labels[0])
        rng = f"; scores range {scores.min():.3f}..{scores.max():.3f}" if scores is not None else ""
        raise Phi1Error(
            f"annotations {path}: all {n} rated files have label {only}, the classifier needs both classes; "
            f"adjust annotate.label_threshold{rng}"
        )
    if counts.min() < 2:
        minority = int(np.argmin(counts))
        raise Phi1Error(
            f"annotations {path}: only {counts.min()} file(s) with label {minority}; a stratified held-out split "
            "needs at least 2 per class (adjust annotate.label_threshold or raise annotate.sample_size)"
        )
    return Annotations(ids=ids, labels=labels, scores=scores)


def read_raw_ids(raw: Path) -> tuple[list[str], list[str]]:
    """(ids, content_sha256 of each text) of data/raw, in shard order."""
    files = dataset_shards(raw, "raw", "ingest")
    names = pq.read_schema(files[0]).names
    for col in ("id", "content"):
        if col not in names:
            raise Phi1Error(f"raw {raw}: missing column {col!r} (has {', '.join(names)})")
    ids: list[str] = []
    hashes: list[str] = []
    for f in files:
        t = pq.read_table(f, columns=["id", "content"])
        ids += t.column("id").to_pylist()
        hashes += [content_sha256(x) for x in t.column("content").to_pylist()]
    return ids, hashes


def read_features(embeddings: Path, raw: Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(raw ids, float32 (n, dim) vectors in raw order, the embedder spec), after checking
    that the embeddings are of this data/raw: the same ids and texts, in the same order."""
    raw_ids, raw_hashes = read_raw_ids(raw)
    ids, hashes, X, spec = read_vectors(embeddings)
    if len(ids) != len(raw_ids):
        raise Phi1Error(
            f"embeddings {embeddings}: {len(ids)} vectors for {len(raw_ids)} files of {raw}; "
            "rerun `phi1 embed` on this data/raw"
        )
    for r, (a, b, ha, hb) in enumerate(zip(ids, raw_ids, hashes, raw_hashes)):
        if a != b or ha != hb:
            what = f"id {a} where {raw} has {b}" if a != b else f"file {b} has another text in {raw}"
            raise Phi1Error(f"embeddings {embeddings}: row {r}: {what}; rerun `phi1 embed` on this data/raw")
    return raw_ids, X, spec


# --------------------------------------------------------------------------- model


def make_forest(cfg: FilterConfig):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, random_state=cfg.seed, n_jobs=-1
    )


def held_out_metrics(cfg: FilterConfig, X: np.ndarray, y: np.ndarray, R: np.ndarray | None = None) -> dict[str, Any]:
    """Train on a stratified split of the annotations, score the held-out part. `R`: the
    annotations' second-pass vectors (filter.refine): the held-out files in the first
    forest's band are then scored by a forest on R, as the stage scores every file, and
    `roc_auc_first_pass` says what the first pass alone gives."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    try:
        tr, te = train_test_split(
            np.arange(len(y)), test_size=cfg.test_fraction, stratify=y, random_state=cfg.seed
        )
    except ValueError as exc:  # test or train part smaller than the number of classes
        raise Phi1Error(
            f"filter.test_fraction={cfg.test_fraction}: cannot split {len(y)} annotations ({exc}); "
            "change filter.test_fraction or annotate more files"
        ) from None
    y_tr, y_te = y[tr], y[te]
    for part, labels in (("held-out", y_te), ("training", y_tr)):
        if len(np.unique(labels)) < 2:
            raise Phi1Error(
                f"the {part} split ({len(labels)} files, filter.test_fraction={cfg.test_fraction}) has only label "
                f"{int(labels[0])}; change filter.test_fraction or annotate more files"
            )
    proba = positive_proba(make_forest(cfg).fit(X[tr], y_tr), X[te])
    extra: dict[str, Any] = {}
    if R is not None:
        from phi1.filter.refine import band, cascade

        refined = band(proba, cfg.threshold, cfg.refine.margin)
        rescored = positive_proba(make_forest(cfg).fit(R[tr], y_tr), R[te][refined])
        extra = {"roc_auc_first_pass": float(roc_auc_score(y_te, proba)), "n_test_refined": int(refined.sum())}
        proba = cascade(proba, refined, rescored)
    pred = (proba >= 0.5).astype(np.int64)
    return {
        "precision": float(precision_score(y_te, pred, zero_division=0)),
        "recall": float(recall_score(y_te, pred, zero_division=0)),
        "f1": float(f1_score(y_te, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_te, proba)),
        "accuracy": float(accuracy_score(y_te, pred)),
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
        **extra,
    }


def positive_proba(clf, X: np.ndarray) -> np.ndarray:
    """P(label 1) per row, float64 in [0, 1]."""
    if len(X) == 0:
        return np.zeros(0, dtype=np.float64)
    return clf.predict_proba(X)[:, list(clf.classes_).index(1)].astype(np.float64)


def keep_mask(scores: np.ndarray, cfg: FilterConfig) -> tuple[np.ndarray, float]:
    """(boolean mask of kept files, the lowest score that is kept)."""
    if cfg.threshold is not None:
        return scores >= cfg.threshold, float(cfg.threshold)
    k = min(len(scores), max(1, round(cfg.top_fraction * len(scores)))) if len(scores) else 0
    # Stable sort on -score: among equal scores the earlier file wins, so reruns agree.
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:k]] = True
    return mask, float(scores[order[k - 1]]) if k else 1.0


# --------------------------------------------------------------------------- outputs


def write_filtered(raw: Path, out: Path, scores: np.ndarray, mask: np.ndarray) -> int:
    """Every raw column of the kept rows plus quality_score, streamed shard by shard into
    the (staged, empty) folder `out`."""
    files = dataset_shards(raw, "raw", "ingest")
    schema = pq.read_schema(files[0]).append(pa.field("quality_score", pa.float64()))
    schema = schema.remove_metadata()

    def rows():
        offset = 0
        for f in files:
            table = pq.read_table(f)
            n = table.num_rows
            s = scores[offset : offset + n]
            m = mask[offset : offset + n]
            offset += n
            if not m.any():
                continue
            table = table.append_column("quality_score", pa.array(s, pa.float64())).filter(pa.array(m))
            yield from table.to_pylist()

    return write_shards(out, rows(), shard_size=SHARD_SIZE, schema=schema)


def save_model(model_dir: Path, clf, spec: dict[str, Any], second=None) -> None:
    """The classifier (and the second pass's, filter.refine) and the feature spec, into
    the (staged, empty) folder `model_dir`."""
    import skops.io as sio

    for name, model in ((CLASSIFIER_FILE, clf), (REFINE_CLASSIFIER_FILE, second)):
        if model is not None:
            buf = io.BytesIO()
            sio.dump(model, buf)
            (model_dir / name).write_bytes(reproducible_skops(buf.getvalue()))
    (model_dir / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


_SKOPS_ID = re.compile(rb'("__id__": |"file": ")(\d+)')


def reproducible_skops(data: bytes) -> bytes:
    """A skops file whose bytes depend only on the model: skops names each object by its
    `id()` (a memory address) and stamps the zip entries with the time, so two dumps of
    one forest differ. The ids are renumbered in order of first use (they only tie
    references together) and every entry gets the zip epoch as its time."""
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(data))
    numbers: dict[bytes, bytes] = {}

    def renumber(m: re.Match) -> bytes:
        return m.group(1) + numbers.setdefault(m.group(2), str(len(numbers) + 1).encode())

    schema = _SKOPS_ID.sub(renumber, src.read("schema.json"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name = info.filename
            body = schema if name == "schema.json" else src.read(name)
            stem, dot, ext = name.partition(".")
            if stem.isdigit():
                name = numbers[stem.encode()].decode() + dot + ext
            dst.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), body,
                         compress_type=info.compress_type)
    return out.getvalue()


def histogram(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    kept, _ = np.histogram(scores[mask], bins=edges)
    dropped, _ = np.histogram(scores[~mask], bins=edges)
    return edges, kept, dropped


def write_plots(plots_dir: Path, scores: np.ndarray, mask: np.ndarray, cutoff: float, rule: str) -> Path:
    """scores_hist.png (kept vs dropped, stacked) and scores_hist.csv (the same counts, for `dvc plots`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges, kept, dropped = histogram(scores, mask)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = edges[1] - edges[0]
    ax.bar(edges[:-1], dropped, width=width, align="edge", color="#bbbbbb", edgecolor="white", label=f"dropped ({(~mask).sum()})")
    ax.bar(edges[:-1], kept, width=width, align="edge", bottom=dropped, color="#2b7bba", edgecolor="white", label=f"kept ({mask.sum()})")
    ax.axvline(cutoff, color="#d62728", linestyle="--", linewidth=1, label=f"{rule} cutoff {cutoff:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("quality_score (P educational)")
    ax.set_ylabel("files")
    ax.set_title("phi1 filter: quality scores of all files")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = plots_dir / "scores_hist.png"
    with atomic_file(png, "wb") as fh:
        fh.write(buf.getvalue())
    with atomic_file(plots_dir / "scores_hist.csv") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["bin_start", "bin_end", "kept", "dropped"])
        for lo, hi, k, d in zip(edges[:-1], edges[1:], kept, dropped):
            w.writerow([f"{lo:.2f}", f"{hi:.2f}", int(k), int(d)])
    return png


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


# --------------------------------------------------------------------------- stage


def run(
    cfg: FilterConfig, raw: Path, annotations: Path, embeddings: Path, out: Path, model_dir: Path,
    metrics_path: Path, plots_dir: Path,
) -> dict[str, Any]:
    """Train, evaluate and apply the quality classifier; return the metrics written."""
    import mlflow
    import sklearn
    import skops

    from phi1.tracking import numeric_metrics, stage_run, tracked_metrics

    t0 = time.perf_counter()
    raw, annotations, embeddings, out = Path(raw), Path(annotations), Path(embeddings), Path(out)
    model_dir, metrics_path, plots_dir = Path(model_dir), Path(metrics_path), Path(plots_dir)

    # Every check a user can fail runs before the slow part and before an MLflow run exists.
    ann = read_annotations(annotations)
    raw_ids, X, emb_spec = read_features(embeddings, raw)
    row_of = {i: r for r, i in enumerate(raw_ids)}
    missing = [i for i in ann.ids if i not in row_of]
    if missing:
        raise Phi1Error(
            f"{len(missing)} of {len(ann.ids)} annotation ids are not in {raw} (e.g. {missing[0]}); "
            "rerun annotate on this data/raw"
        )
    inputs = [raw, annotations, embeddings]
    for path, kind in ((out, "dir"), (model_dir, "dir"), (metrics_path, "file"), (plots_dir / "scores_hist.png", "file")):
        check_output(path, inputs, kind)

    refiner = load_embedder(cfg.refine.embedding, cfg.refine.max_tokens, cfg.refine.batch_size) \
        if cfg.refine.embedding else None

    with stage_run("filter", cfg, inputs=inputs), outputs(inputs) as staged:
        ann_rows = [row_of[i] for i in ann.ids]
        X_ann = X[ann_rows]
        # The saved model sees every annotation; the held-out numbers estimate it.
        clf = make_forest(cfg).fit(X_ann, ann.labels)
        scores = positive_proba(clf, X)
        second = None
        if refiner is None:
            metrics: dict[str, Any] = held_out_metrics(cfg, X_ann, ann.labels)
        else:
            second, scores, R_ann, refine_metrics = refine_scores(cfg, refiner, raw, ann_rows, ann.labels, scores)
            metrics = held_out_metrics(cfg, X_ann, ann.labels, R_ann)
        mask, cutoff = keep_mask(scores, cfg)
        rule = "threshold" if cfg.threshold is not None else "top_fraction"

        n_kept = write_filtered(raw, staged.dir(out), scores, mask)
        keep = {"rule": rule, rule: getattr(cfg, rule), "score_cutoff": cutoff}
        spec = {
            **emb_spec,
            "classifier": "sklearn.ensemble.RandomForestClassifier",
            "classifier_file": CLASSIFIER_FILE,
            "positive_class": 1,
            "sklearn_version": sklearn.__version__,
            "skops_version": skops.__version__,
            "trained_on": "all_annotations",
            "n_fit": len(ann.ids),
            "keep": keep,
        }
        if second is not None:
            spec["refine"] = {**refiner.describe(), "classifier_file": REFINE_CLASSIFIER_FILE,
                              "batch_size": cfg.refine.batch_size, "threshold": cfg.threshold,
                              "margin": cfg.refine.margin}
        save_model(staged.dir(model_dir), clf, spec, second)
        png = write_plots(plots_dir, scores, mask, cutoff, rule)

        metrics.update(
            n_annotations=len(ann.ids),
            positive_fraction=float(ann.labels.mean()),
            refit="all_annotations",
            n_fit=len(ann.ids),
            n_scored=int(len(scores)),
            n_kept=int(n_kept),
            kept_fraction=float(n_kept / len(scores)) if len(scores) else 0.0,
            mean_score_all=_mean(scores),
            mean_score_kept=_mean(scores[mask]),
            mean_score_dropped=_mean(scores[~mask]),
            score_cutoff=cutoff,
            embedding=emb_spec["embedding"],
            embedding_dim=emb_spec["dim"],
            embedding_dtype=emb_spec["dtype"],
            seconds=round(time.perf_counter() - t0, 3),
        )
        metrics[rule] = getattr(cfg, rule)
        if second is not None:
            metrics["refine"] = refine_metrics
        staged.json(metrics_path, tracked_metrics(metrics))  # without timings: those go to MLflow
        staged.commit()  # data, model and metrics land together, before MLflow reads them

        mlflow.log_metrics(numeric_metrics(metrics))
        # the features' provenance (the `embed` stage's keys), for comparing runs by it
        mlflow.log_params({"embedding": emb_spec["embedding"], "embedding_max_tokens": emb_spec["max_tokens"],
                           "embedding_dtype": emb_spec["dtype"]})
        mlflow.log_artifact(str(model_dir / SPEC_FILE), "quality_model")
        mlflow.log_artifact(str(png), "plots")
        mlflow.log_artifact(str(metrics_path), "metrics")
        log_forest(clf, "quality_classifier", X_ann)
        if second is not None:
            mlflow.log_params({"refine_embedding": cfg.refine.embedding, "refine_margin": cfg.refine.margin})
            log_forest(second, "quality_refine_classifier", R_ann)
    if n_kept == 0:
        print(f"warning: filter kept no files ({rule}={getattr(cfg, rule)})", file=sys.stderr)
    return metrics


def log_forest(clf, name: str, X: np.ndarray) -> None:
    """A forest as an MLflow logged model of the active run (skops, predict_proba)."""
    import mlflow
    import sklearn
    import skops

    mlflow.sklearn.log_model(
        clf,
        name=name,
        serialization_format="skops",
        skops_trusted_types=SKOPS_TRUSTED,
        pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
        pyfunc_predict_fn="predict_proba",
        signature=mlflow.models.infer_signature(X[:5], clf.predict_proba(X[:5])),
    )


# --------------------------------------------------------------------------- second pass


def refine_scores(
    cfg: FilterConfig, embedder: Embedder, raw: Path, ann_rows: list[int], labels: np.ndarray,
    first: np.ndarray, progress: bool = True,
) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """filter.refine: embed the annotated files and the first pass's band with `embedder`,
    fit the second forest on the annotations, rescore the band.
    Returns (second forest, final scores, the annotations' second-pass vectors, metrics)."""
    from phi1.filter.refine import band, cascade

    refined = band(first, cfg.threshold, cfg.refine.margin)
    need = refined.copy()
    need[ann_rows] = True
    rows = np.flatnonzero(need)
    t = time.perf_counter()
    V, cached = refine_vectors(raw, rows, embedder, cfg.refine, cfg.refine.cache_path, progress)
    seconds = time.perf_counter() - t
    at = np.cumsum(need) - 1  # row of data/raw -> its row in V (where need)
    R_ann = V[at[ann_rows]]
    second = make_forest(cfg).fit(R_ann, labels)
    scores = cascade(first, refined, positive_proba(second, V[at[refined]]))
    n = len(first)
    metrics = {
        "embedding": cfg.refine.embedding,
        "margin": cfg.refine.margin,
        "n_refined": int(refined.sum()),
        "refined_fraction": float(refined.mean()) if n else 0.0,
        "n_embedded": int(len(rows)),
        "embedded_fraction": float(len(rows) / n) if n else 0.0,
        "n_flipped": int(((first >= cfg.threshold) != (scores >= cfg.threshold)).sum()),
        # run figures (MLflow only)
        "cached": int(cached),
        "embed_seconds": round(seconds, 3),
    }
    return second, scores, R_ann, metrics


def refine_vectors(
    raw: Path, rows: np.ndarray, embedder: Embedder, cfg: RefineConfig, cache_path: str | None,
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """(second-pass vectors of these sorted rows of data/raw, how many came from the
    per-file cache at `cache_path`)."""
    from phi1.filter.refine import FileCache, embed_cached

    texts = read_rows(raw, rows)
    cache = FileCache(cache_path, embedder, cfg)
    return embed_cached(embedder, cache, texts, [content_sha256(x) for x in texts], progress=progress)


def read_rows(raw: Path, rows: np.ndarray) -> list[str]:
    """The texts of data/raw at these (sorted) row numbers, read shard by shard."""
    files = dataset_shards(raw, "raw", "ingest")
    out: list[str] = []
    offset = 0
    k = 0
    for f in files:
        if k == len(rows):
            break
        n = pq.read_metadata(f).num_rows
        j = int(np.searchsorted(rows, offset + n))
        if j > k:
            texts = pq.read_table(f, columns=["content"]).column("content")
            out += [texts[int(r) - offset].as_py() for r in rows[k:j]]
            k = j
        offset += n
    return out


# --------------------------------------------------------------------------- reuse


@dataclass
class QualityModel:
    """A trained filter loaded back from models/quality: score new files the same way."""

    classifier: Any
    spec: dict[str, Any]
    embedder: Embedder
    refine: tuple[Any, Embedder] | None = None
    """(second forest, its embedder) when the model was trained with filter.refine."""

    def score(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """quality_score (P(label 1)) of each text, float64 (n,)."""
        scores = positive_proba(self.classifier, self.embedder.embed(texts, progress=progress))
        if self.refine is None:
            return scores
        from phi1.filter.refine import band, cascade

        second, embedder = self.refine
        r = self.spec["refine"]
        refined = band(scores, r["threshold"], r["margin"])
        band_texts = [t for t, b in zip(texts, refined) if b]
        if not band_texts:
            return scores
        return cascade(scores, refined, positive_proba(second, embedder.embed(band_texts, progress=progress)))

    def keep(self, scores: np.ndarray) -> np.ndarray:
        """The saved keep rule applied to scores (a top fraction becomes its score cutoff)."""
        return scores >= self.spec["keep"]["score_cutoff"]


def load_quality_model(model_dir: Path, batch_size: int = 32) -> QualityModel:
    import skops.io as sio

    model_dir = Path(model_dir)
    spec_path = model_dir / SPEC_FILE
    if not spec_path.is_file():
        raise Phi1Error(f"quality model incomplete: {spec_path} not found (run `phi1 filter`)")
    spec = json.loads(spec_path.read_text())
    refine = spec.get("refine")
    for name in (CLASSIFIER_FILE,) + ((refine["classifier_file"],) if refine else ()):
        if not (model_dir / name).is_file():
            raise Phi1Error(f"quality model incomplete: {model_dir / name} not found (run `phi1 filter`)")

    def embedder_of(s: dict[str, Any], batch: int) -> Embedder:
        # The dtype the model was trained with, not `auto`: the same vectors on any machine that can.
        emb = load_embedder(s["embedding"], s["max_tokens"], batch, dtype=s.get("dtype", "float32"))
        if emb.dim != s["dim"]:
            raise Phi1Error(f"{spec_path}: embedding {s['embedding']!r} now has {emb.dim} dims, model expects {s['dim']}")
        return emb

    clf = sio.load(model_dir / CLASSIFIER_FILE, trusted=SKOPS_TRUSTED)
    second = None
    if refine:
        # the stage's batch size: with 1 (its default) a vector is independent of its neighbours
        second = (sio.load(model_dir / refine["classifier_file"], trusted=SKOPS_TRUSTED),
                  embedder_of(refine, refine["batch_size"]))
    return QualityModel(classifier=clf, spec=spec, embedder=embedder_of(spec, batch_size), refine=second)


__all__ = ["run", "read_annotations", "keep_mask", "held_out_metrics", "QualityModel", "load_quality_model"]
