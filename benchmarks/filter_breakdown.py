"""What the quality filter keeps and drops, by distribution and by kind of file.

    python benchmarks/filter_breakdown.py --project /tmp/sp100 [--top 15] [--examples 3]

Reads a finished project's data/raw (with its manifest: each file's distribution),
data/embeddings and models/quality, scores every raw file with the saved classifier
(the `filter` stage's own functions, so the scores are the stage's; a cascade model,
`filter.refine`, rescores its band from the project's per-file vector cache) and prints markdown
tables: files, kept share and mean score per kind of file (tests, generated, vendored,
examples, library code) and per distribution (the largest, then the most and least kept
of those with enough files), and the highest-scored kept and lowest-scored dropped files
with their first lines. Drops before the filter (ingest's reasons) are not here: see
metrics/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from phi1.filter.stage import load_quality_model, positive_proba, read_features
from phi1.io import read_table

# First match wins; paths are relative to site-packages (or the source root).
KINDS = (
    ("tests", re.compile(r"(^|/)(tests?|testing|test_utils)(/|$)|(^|/)test_[^/]*\.py$|_tests?\.py$|(^|/)conftest\.py$")),
    ("generated", re.compile(r"_pb2(_grpc)?\.py$|(^|/)(generated|_generated|gen)(/|$)|_generated\.py$|(^|/)_version\.py$")),
    ("vendored", re.compile(r"(^|/)(_vendor|vendor|vendored|thirdparty|third_party|_vendored|externals?)(/|$)")),
    ("examples", re.compile(r"(^|/)(examples?|demos?|samples?|tutorials?|benchmarks?)(/|$)")),
)


def kind_of(path: str) -> str:
    return next((k for k, rx in KINDS if rx.search(path)), "library")


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def group_rows(groups: dict[str, list[tuple[float, bool]]], names: list[str]) -> list[list]:
    rows = []
    for n in names:
        g = groups[n]
        kept = sum(k for _, k in g)
        rows.append([n, len(g), kept, f"{100 * kept / len(g):.0f}%", f"{np.mean([s for s, _ in g]):.3f}"])
    return rows


def first_lines(text: str, n: int = 6, width: int = 76) -> str:
    """The first n non-blank lines after the leading comment block (licence headers)."""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    while lines and lines[0].lstrip().startswith("#"):
        lines.pop(0)
    return "\n".join(ln[:width] for ln in lines[:n])


def second_pass(root: Path, model, first):
    """A cascade model's final scores (filter.refine): the band rescored by the second
    forest, its vectors read from the project's per-file cache (embedded where missing)."""
    from phi1.config import load_stage_config
    from phi1.filter.refine import band, cascade
    from phi1.filter.stage import refine_vectors

    second, embedder = model.refine
    r = model.spec["refine"]
    refined = band(first, r["threshold"], r["margin"])
    cfg = load_stage_config("filter", root / "params.yaml").refine
    folder = cfg.cache_path and str(root / cfg.cache_path)
    V, cached = refine_vectors(root / "data/raw", np.flatnonzero(refined), embedder, cfg, folder)
    print(f"second pass: {int(refined.sum())} files rescored ({cached} vectors from the cache)\n")
    return cascade(first, refined, positive_proba(second, V))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True, help="a project where `phi1 filter` has run")
    ap.add_argument("--top", type=int, default=15, help="distributions listed in each table")
    ap.add_argument("--min-files", type=int, default=100, help="least files for the most/least kept tables")
    ap.add_argument("--examples", type=int, default=3)
    args = ap.parse_args()
    root = args.project
    raw = root / "data/raw"
    ids, X, _ = read_features(root / "data/embeddings", raw)
    model = load_quality_model(root / "models/quality")
    scores = positive_proba(model.classifier, X)
    if model.refine is not None:
        scores = second_pass(root, model, scores)
    keep = model.keep(scores)
    kept_ids = set(read_table(root / "data/codetextbook/filtered", columns=["id"]).column("id").to_pylist())
    assert kept_ids == {i for i, k in zip(ids, keep) if k}, "the saved model does not reproduce data/codetextbook/filtered"

    paths: list[str] = []
    for f in sorted(raw.glob("*.parquet")):
        paths += pq.read_table(f, columns=["path"]).column("path").to_pylist()
    manifest = json.loads((raw / "manifest.json").read_text())
    dist = {m["path"]: m.get("distribution") or m["source"] for m in manifest["files"]}
    by_kind: dict[str, list] = defaultdict(list)
    by_dist: dict[str, list] = defaultdict(list)
    for p, s, k in zip(paths, scores, keep):
        by_kind[kind_of(p)].append((float(s), bool(k)))
        by_dist[dist.get(p, "?")].append((float(s), bool(k)))

    header = ["", "files", "kept", "kept %", "mean score"]
    print(f"Scored {len(ids)} files; kept {int(keep.sum())} ({100 * keep.mean():.1f}%), "
          f"score cutoff {model.spec['keep']['score_cutoff']}.\n")
    print("By kind of file (path patterns in benchmarks/filter_breakdown.py):\n")
    kinds = sorted(by_kind, key=lambda k: -len(by_kind[k]))
    print(md_table(["kind", *header[1:]], group_rows(by_kind, kinds)) + "\n")
    largest = sorted(by_dist, key=lambda d: -len(by_dist[d]))[: args.top]
    print(f"The {args.top} largest distributions:\n")
    print(md_table(["distribution", *header[1:]], group_rows(by_dist, largest)) + "\n")
    big = [d for d in by_dist if len(by_dist[d]) >= args.min_files]
    share = {d: np.mean([k for _, k in by_dist[d]]) for d in big}
    for title, order in (("most", sorted(big, key=lambda d: -share[d])), ("least", sorted(big, key=lambda d: share[d]))):
        print(f"Distributions with >= {args.min_files} files, {title} kept:\n")
        print(md_table(["distribution", *header[1:]], group_rows(by_dist, order[: max(1, args.top // 3)])) + "\n")

    order = np.argsort(-scores, kind="stable")
    picks = [("kept, highest scores", [i for i in order if keep[i]][: args.examples]),
             ("dropped, lowest scores", [i for i in order[::-1] if not keep[i]][: args.examples])]
    texts = {}
    want = {int(i) for _, idx in picks for i in idx}
    row = 0
    for f in sorted(raw.glob("*.parquet")):
        t = pq.read_table(f, columns=["content"]).column("content").to_pylist()
        for j, text in enumerate(t):
            if row + j in want:
                texts[row + j] = text
        row += len(t)
    for title, idx in picks:
        print(f"Examples, {title}:\n")
        for i in idx:
            print(f"- `{paths[i]}` ({dist.get(paths[i], '?')}, {kind_of(paths[i])}), score {scores[i]:.3f}:\n")
            print("```python\n" + first_lines(texts[int(i)]) + "\n```\n")


if __name__ == "__main__":
    main()
