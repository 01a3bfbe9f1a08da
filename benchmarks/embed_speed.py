"""Faster embeddings for the quality filter: speed against MiniLM, and the same decisions?

    python benchmarks/embed_speed.py --raw data/raw --annotations data/annotations
    python benchmarks/embed_speed.py --raw R --annotations A \\
        --candidates minilm@256 model2vec@256 model2vec@1024 minilm@128 --thresholds 0.5 0.7

Embeds the same files (every file of `--raw`) with each candidate `spec@max_tokens`;
the first is the baseline (MiniLM float32 at 256 tokens, the `embed` stage's default).
For each candidate it prints:

- speed: wall and CPU seconds of `Embedder.embed` over all files (model loading, and a
  model2vec distillation at first use, reported apart), files/s, and the ratio of the
  baseline's seconds to the candidate's (wall and CPU; CPU is steadier on a shared box);
- decisions, as the `filter` stage takes them (its own functions and `filter.*` params):
  the held-out ROC-AUC of the quality classifier trained on the candidate's vectors of
  the annotated files (bar: within 0.02 of the baseline's), and, with the forest refit
  on all annotations as the stage does, the share of all files whose kept/dropped
  verdict equals the baseline's at each threshold (bar: >= 90%).

`--cascade M [M ...]` adds one row per margin M for the `filter.refine` cascade: the
second candidate (the cheap one) scores every file, and the baseline, embedding one file
per batch as the stage does, rescores the files in the band [t - M, t + M) around the
first threshold, after embedding the annotated files to train its forest. Its time is
the cheap candidate's over all files plus the baseline's over exactly those files (each
file is embedded and timed alone, so one pass over the widest margin's files times every
margin); its decisions come from the stage's own functions (`held_out_metrics` with the
second-pass vectors, `refine.band`, `refine.cascade`).

`--cv-repeats R` (default 3) also reports each candidate's ROC-AUC over R x 5-fold
stratified cross-validation on all annotations (forests as the stage fits them), with the
difference from the baseline's on the same folds: one held-out split of a few hundred
annotations moves the AUC by several hundredths (see RESULTS.md), more than the bar.

`--threads` sets torch's (and BLAS's) threads, 2 by default (the dev box).

`--sample N` keeps N evenly spread files and every annotated file (a corpus too big to
embed whole with the baseline); the decisions are then over that sample.

On a busy machine, `--speed-files N` times every candidate on the same N files (every
k-th file of data/raw) and `--baseline-vectors data/embeddings` takes the baseline's
vectors of all files from the `embed` stage's output of that run instead of embedding
them again (checked: same ids and texts, and the timed files' fresh vectors must match
the stored ones); candidates other than the baseline still embed every file for the
decisions.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def parse_candidate(text: str) -> tuple[str, int]:
    spec, _, tokens = text.rpartition("@")
    if not spec or not tokens.isdigit():
        raise SystemExit(f"candidate {text!r}: expected SPEC@MAX_TOKENS, e.g. minilm@256 or model2vec@1024")
    return spec, int(tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--raw", type=Path, required=True, help="data/raw of a run (parquet shards)")
    ap.add_argument("--annotations", type=Path, required=True, help="data/annotations of the same run")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the filter.* keys")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                    help="override a filter key, e.g. -S filter.threshold=0.7")
    ap.add_argument("--candidates", nargs="+", default=["minilm@256", "model2vec@256", "model2vec@1024"],
                    help="SPEC@MAX_TOKENS; the first is the baseline")
    ap.add_argument("--thresholds", nargs="+", type=float, default=None,
                    help="keep thresholds to compare verdicts at (default: filter.threshold)")
    ap.add_argument("--cascade", nargs="+", type=float, default=[],
                    help="margins of filter.refine cascades: the 2nd candidate first, the baseline in the band")
    ap.add_argument("--cv-repeats", type=int, default=3, help="repeats of 5-fold CV for the AUC (0: off)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N files only (a quick look)")
    ap.add_argument("--sample", type=int, default=None,
                    help="N evenly spread files plus every annotated file (a big corpus: decisions on a sample)")
    ap.add_argument("--speed-files", type=int, default=None,
                    help="time each candidate on N evenly spread files (default: all)")
    ap.add_argument("--baseline-vectors", type=Path, default=None,
                    help="data/embeddings of the run: the baseline's vectors of all files (see above)")
    args = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from phi1.config import load_stage_config
    from phi1.engines.embed import load_embedder
    from phi1.filter.stage import held_out_metrics, keep_mask, make_forest, positive_proba, read_annotations
    from phi1.io import read_table

    torch.set_num_threads(args.threads)
    cfg = load_stage_config("filter", args.params, args.overrides)
    thresholds = args.thresholds or ([cfg.threshold] if cfg.threshold is not None else [])
    table = read_table(args.raw, columns=["id", "content"])
    ids, texts = table.column("id").to_pylist(), table.column("content").to_pylist()
    if args.limit:
        ids, texts = ids[: args.limit], texts[: args.limit]
    ann = read_annotations(args.annotations)
    if args.sample:
        annotated = set(ann.ids)
        step = max(1, len(ids) // args.sample)
        pick = [r for r, i in enumerate(ids) if r % step == 0 or i in annotated]
        print(f"sample: every {step}th of {len(ids)} files and the annotated ones", flush=True)
        ids, texts = [ids[r] for r in pick], [texts[r] for r in pick]
    row = {i: r for r, i in enumerate(ids)}
    keep_ann = [k for k, i in enumerate(ann.ids) if i in row]
    ann_rows = [row[ann.ids[k]] for k in keep_ann]
    y = ann.labels[keep_ann]
    print(f"files {len(texts)} ({sum(map(len, texts)) / 1e6:.1f} MB), annotated {len(y)} "
          f"({int(y.sum())} label 1); torch threads {torch.get_num_threads()}; "
          f"filter: {cfg.n_estimators} trees, seed {cfg.seed}, thresholds {thresholds}", flush=True)

    n = len(texts)
    step = max(1, n // args.speed_files) if args.speed_files else 1
    timed = list(range(0, n, step))[: args.speed_files or n]
    timed_texts = [texts[i] for i in timed]
    print(f"timed on {len(timed)} files ({sum(map(len, timed_texts)) / 1e6:.1f} MB)", flush=True)

    results = []
    for k, text in enumerate(args.candidates):
        spec, max_tokens = parse_candidate(text)
        t0 = time.perf_counter()
        emb = load_embedder(spec, max_tokens, args.batch_size, device="cpu", dtype="float32")
        load_s = time.perf_counter() - t0
        w0, c0 = time.perf_counter(), time.process_time()
        X_timed = emb.embed(timed_texts, progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if len(timed) == n:
            X = X_timed
        elif k == 0 and args.baseline_vectors is not None:
            X = stored_vectors(args.baseline_vectors, ids, texts, emb.describe())
            # Vectors depend on batch neighbours by ~1e-6 (padding), so compare by cosine.
            worst = float((X[timed] * X_timed).sum(1).min())
            print(f"  baseline: stored vectors of {args.baseline_vectors}; timed files' min cosine to them "
                  f"{worst:.6f}", flush=True)
            if worst < 0.9999:
                raise SystemExit(f"{args.baseline_vectors}: not the vectors {text} gives on this machine")
        else:
            X = emb.embed(texts, progress=False)
        auc = held_out_metrics(cfg, X[ann_rows], y)["roc_auc"]
        clf = make_forest(cfg).fit(X[ann_rows], y)
        scores = positive_proba(clf, X)
        masks = {t: keep_mask(scores, _with_threshold(cfg, t))[0] for t in thresholds}
        results.append(dict(name=text, dim=emb.dim, load_s=load_s, wall=wall, cpu=cpu, auc=auc, masks=masks,
                            cv=cv_aucs(cfg, X[ann_rows], y, args.cv_repeats),
                            X=X if k < 2 else None, scores=scores))
        del emb
        print(f"  done {text}: load {load_s:.1f} s, embed wall {wall:.1f} s, CPU {cpu:.1f} s", flush=True)

    if args.cascade:
        results += cascades(args, cfg, results, texts, ann_rows, y, thresholds, len(timed) == n)
    base = results[0]
    # The noise floor of "agreement": the baseline's own vectors with another forest seed.
    from dataclasses import replace

    X0 = base.pop("X")
    alt = replace(cfg, seed=cfg.seed + 1)
    scores = positive_proba(make_forest(alt).fit(X0[ann_rows], y), X0)
    floor = {t: float((keep_mask(scores, _with_threshold(alt, t))[0] == base["masks"][t]).mean()) for t in thresholds}
    print()
    head = f"{'candidate':<22}{'wall s':>8}{'CPU s':>8}{'x wall':>7}{'x CPU':>6}{'AUC':>6}{'dAUC':>7}"
    head += f"{'cvAUC':>6}{'dcv':>7}" if args.cv_repeats else ""
    head += "".join(f"{'agr@' + format(t, 'g'):>8}" for t in thresholds)
    print(head)
    for r in results:
        line = (f"{r['name']:<22}{r['wall']:>8.1f}{r['cpu']:>8.1f}"
                f"{base['wall'] / r['wall']:>7.2f}{base['cpu'] / r['cpu']:>6.1f}{r['auc']:>6.3f}"
                f"{r['auc'] - base['auc']:>+7.3f}")
        if args.cv_repeats:
            line += f"{np.mean(r['cv']):>6.3f}{np.mean(np.subtract(r['cv'], base['cv'])):>+7.3f}"
        for t in thresholds:
            agree = float((r["masks"][t] == base["masks"][t]).mean())
            line += f"{agree:>8.3f}"
        print(line)
    print()
    print(f"timed files: {len(timed)}; files/s: " + ", ".join(f"{r['name']} {len(timed) / r['wall']:.1f}"
                                                         for r in results if "files" not in r))
    for r in results:
        if "files" in r:
            print(f"{r['name']}: the baseline embedded {r['files']} files ({r['files'] / n:.1%}: "
                  f"{len(ann_rows)} annotated, {r['band']} in the band)")
    if args.cv_repeats:
        sd = {r["name"]: np.std(np.subtract(r["cv"], base["cv"])) for r in results[1:]}
        print(f"cvAUC: mean over {args.cv_repeats} x 5 folds; dcv: mean per-fold difference from the baseline "
              "(sd over folds: " + ", ".join(f"{k} {v:.3f}" for k, v in sd.items()) + ")")
    for t in thresholds:
        kept = ", ".join(f"{r['name']} {int(r['masks'][t].sum())}" for r in results)
        print(f"kept at threshold {t:g} (of {len(texts)}): {kept}")
    print("agreement of the baseline with itself, forest seed + 1: "
          + ", ".join(f"{floor[t]:.3f} at {t:g}" for t in thresholds))
    print("bars: |dAUC| <= 0.02 and agreement >= 0.90 with the baseline (first row)")


def cv_aucs(cfg, X_ann, y, repeats: int, R_ann=None, margin: float | None = None) -> list[float]:
    """ROC-AUC of each fold of `repeats` x 5-fold stratified CV (the same folds for every
    candidate), forests as the stage fits them; with R_ann, the refine cascade's scores."""
    if not repeats:
        return []
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    from phi1.filter.refine import band, cascade
    from phi1.filter.stage import make_forest, positive_proba

    out = []
    for tr, te in RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=cfg.seed).split(X_ann, y):
        p = positive_proba(make_forest(cfg).fit(X_ann[tr], y[tr]), X_ann[te])
        if R_ann is not None:
            refined = band(p, cfg.threshold, margin)
            p = cascade(p, refined, positive_proba(make_forest(cfg).fit(R_ann[tr], y[tr]), R_ann[te][refined]))
        out.append(float(roc_auc_score(y[te], p)))
    return out


def cascades(args, cfg, results, texts, ann_rows, y, thresholds, all_timed: bool) -> list[dict]:
    """One result per --cascade margin: the 2nd candidate first, the baseline in the band."""
    from dataclasses import replace

    import numpy as np

    from phi1.engines.embed import load_embedder
    from phi1.filter.refine import band, cascade
    from phi1.filter.stage import held_out_metrics, keep_mask, make_forest, positive_proba

    if len(results) < 2 or not all_timed or cfg.threshold is None:
        raise SystemExit("--cascade needs two candidates, every file timed (no --speed-files) and filter.threshold")
    base, cheap = results[0], results[1]
    spec, max_tokens = parse_candidate(args.candidates[0])
    t = cfg.threshold
    n = len(texts)
    first = cheap["scores"]
    is_ann = np.zeros(n, dtype=bool)
    is_ann[ann_rows] = True
    widest = np.flatnonzero(is_ann | band(first, t, max(args.cascade)))
    emb = load_embedder(spec, max_tokens, 1, device="cpu", dtype="float32")  # one file per batch, as the stage
    R = np.zeros((n, emb.dim), dtype=np.float32)
    wall = np.zeros(n)
    cpu = np.zeros(n)
    print(f"cascade: embedding {len(widest)} files one by one with {args.candidates[0]}", flush=True)
    for r in widest:
        w0, c0 = time.perf_counter(), time.process_time()
        R[r] = emb.embed([texts[r]], progress=False)[0]
        wall[r], cpu[r] = time.perf_counter() - w0, time.process_time() - c0
    out = []
    for m in args.cascade:
        c = replace(cfg, refine=replace(cfg.refine, embedding=spec, margin=m, max_tokens=max_tokens))
        refined = band(first, t, m)
        need = is_ann | refined
        second = make_forest(c).fit(R[ann_rows], y)
        scores = cascade(first, refined, positive_proba(second, R[refined]))
        masks = {th: keep_mask(scores, _with_threshold(c, th))[0] for th in thresholds}
        out.append(dict(
            name=f"{cheap['name']}>{m:g}", dim=cheap["dim"], load_s=0.0,
            wall=cheap["wall"] + float(wall[need].sum()), cpu=cheap["cpu"] + float(cpu[need].sum()),
            auc=held_out_metrics(c, cheap["X"][ann_rows], y, R[ann_rows])["roc_auc"], masks=masks,
            cv=cv_aucs(c, cheap["X"][ann_rows], y, args.cv_repeats, R[ann_rows], m),
            files=int(need.sum()), band=int(refined.sum()),
        ))
    return out


def stored_vectors(folder: Path, ids: list[str], texts: list[str], spec: dict):
    """The embed stage's vectors of these files, in this order, made by this embedder."""
    from phi1.engines.vectors import content_sha256, read_vectors

    s_ids, s_hashes, X, s_spec = read_vectors(folder)
    for key in ("embedding", "max_tokens", "dtype", "dim"):
        if s_spec.get(key) != spec.get(key):
            raise SystemExit(f"{folder}: {key} {s_spec.get(key)!r}, the baseline has {spec.get(key)!r}")
    row = {i: r for r, i in enumerate(s_ids)}
    missing = [i for i in ids if i not in row]
    if missing:
        raise SystemExit(f"{folder}: no vector for {len(missing)} files of --raw (e.g. {missing[0]})")
    rows = [row[i] for i in ids]
    if any(s_hashes[r] != content_sha256(t) for r, t in zip(rows, texts)):
        raise SystemExit(f"{folder}: vectors of other texts than --raw's")
    return X[rows]


def _with_threshold(cfg, threshold: float):
    from dataclasses import replace

    return replace(cfg, threshold=threshold, top_fraction=None)


if __name__ == "__main__":
    main()
