"""Speed of the decontaminate stage, and of its AST detector with and without prefilters.

    python benchmarks/decontaminate.py                 # default data paths (after `dvc repro synthesize`)
    python benchmarks/decontaminate.py --filtered F --textbook T --exercises E --synthetic 10000

Prints (and with --out writes as JSON):
1. the stage's detectors on the given data at the default params (`phi1.decontaminate.score`):
   wall and CPU seconds per phase;
2. the AST detector on the exercises: with the lossless bounds (size, label histogram,
   pre/post-order sequence) plus the lossy embedding top-10, with the bounds only (the
   default), and with no prefilter at all; pairs/s counts every
   (function, task) pair the detector answers for, and "no prefilter" is measured on a
   random sample of pairs (exact TED on all of them would take hours) and extrapolated;
3. the same on `--synthetic` exercises: functions drawn from the filtered corpus to stand in
   for a 10,000-exercise set (bounds only: embedding them is the embedding detector's cost).
CPU seconds are the steadier number on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from phi1.config import DecontaminateConfig
from phi1.decontaminate.stage import score
from phi1.decontaminate.astmatch import ted
from phi1.decontaminate.detect import AstStats, ast_pairs, embedding_pairs
from phi1.decontaminate.references import load_references
from phi1.decontaminate.units import COLUMNS, extract_units
from phi1.io import read_table


TOP_K = 10
"""The embedding top-k measured (the stage's default, ast_top_k null, uses the bounds only)."""


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def brute_rate(units, refs, sample: int, seed: int = 0) -> tuple[float, int]:
    """TED pairs/s on `sample` random (unit, task) pairs, and how many were timed."""
    rng = random.Random(seed)
    pairs = [(rng.randrange(len(units)), rng.randrange(len(refs))) for _ in range(sample)]
    with Clock() as c:
        for u, j in pairs:
            ted(units[u].tree, refs[j].tree)
    return sample / c.cpu, sample


def ast_rows(label: str, units, refs, cfg, allowed, sample: int) -> list[dict]:
    rows = []
    floor = min(min(cfg.sweep), cfg.tau)
    for name, mask, bounds in ((f"bounds + embedding top-{TOP_K}", allowed, True), ("bounds only", None, True)):
        if mask is None and name != "bounds only":
            continue
        stats = AstStats()
        with Clock() as c:
            hits = ast_pairs(units, refs, floor, allowed=mask, use_bounds=bounds, min_nodes=cfg.ast_min_nodes,
                             progress=False, stats=stats)
        rows.append({"data": label, "prefilter": name, "pairs": stats.pairs, "after_size": stats.after_size,
                     "after_labels": stats.after_labels, "after_top_k": stats.after_top_k,
                     "ted_computed": stats.ted_computed, "hits": len(hits), "wall_s": round(c.wall, 2),
                     "cpu_s": round(c.cpu, 2), "pairs_per_s": round(stats.pairs / max(c.cpu, 1e-9))})
    rate, timed = brute_rate(units, refs, sample)
    total = len(units) * len(refs)
    rows.append({"data": label, "prefilter": "none (extrapolated)", "pairs": total, "ted_computed": total,
                 "timed_pairs": timed, "cpu_s": round(total / rate, 1), "pairs_per_s": round(rate, 1)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filtered", type=Path, default=Path("data/codetextbook/filtered"))
    ap.add_argument("--textbook", type=Path, default=Path("data/codetextbook/textbook"))
    ap.add_argument("--exercises", type=Path, default=Path("data/codeexercises"))
    ap.add_argument("--synthetic", type=int, default=10_000, help="stand-in exercises drawn from the corpus (0: skip)")
    ap.add_argument("--sample", type=int, default=300, help="pairs timed without prefilters")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    cfg = DecontaminateConfig(cache_path=None)  # cold: nothing reused from an earlier run
    tables = {"filtered": read_table(args.filtered), "textbook": read_table(args.textbook),
              "exercises": read_table(args.exercises)}

    with Clock() as c:
        result = score(cfg, tables, progress=False)
    stage = {"wall_s": round(c.wall, 1), "cpu_s": round(c.cpu, 1), "phases_wall_s": result["timings"],
             "items": {k: t.num_rows for k, t in tables.items()}, "flags": len(result["flags"])}
    print(f"stage detectors: {stage}")

    refs = load_references(cfg.benchmarks)
    rows = tables["exercises"].select(COLUMNS["exercises"]).to_pylist()
    units = extract_units("exercises", rows, want_source=True, workers=cfg.workers)
    from phi1.engines.embed import load_embedder

    emb = load_embedder(cfg.embedding, cfg.max_tokens, cfg.batch_size)
    ref_vecs = emb.embed([r.text for r in refs], progress=False)
    vecs = emb.embed([u.source or "" for u in units], progress=False)
    _, allowed = embedding_pairs(vecs, ref_vecs, min(cfg.sweep), cfg.ast_top_k or TOP_K)
    table = ast_rows(f"exercises ({len(units)} functions)", units, refs, cfg, allowed, args.sample)

    if args.synthetic:
        corpus = tables["filtered"].select(COLUMNS["filtered"]).to_pylist()
        pool = extract_units("filtered", corpus, want_source=False, workers=cfg.workers)
        synthetic = random.Random(0).sample(pool, min(args.synthetic, len(pool)))
        table += ast_rows(f"{len(synthetic)} corpus functions", synthetic, refs, cfg, None, args.sample)

    keys = ["data", "prefilter", "pairs", "after_size", "after_labels", "after_top_k", "ted_computed", "hits",
            "wall_s", "cpu_s", "pairs_per_s"]
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for r in table:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    if args.out:
        args.out.write_text(json.dumps({"stage": stage, "ast": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
