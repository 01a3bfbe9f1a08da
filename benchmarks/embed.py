"""Embedding throughput of the filter stage's backends on the default corpus.

    python benchmarks/embed.py                      # stdlib files (as ingest keeps them, roughly)
    python benchmarks/embed.py --raw data/raw       # the real data/raw
    python benchmarks/embed.py --dtypes float32 bfloat16 --max-tokens 256 --spec minilm

Prints one line per dtype: files, wall and CPU seconds of `Embedder.embed` (model
loading excluded, reported apart), files/s, and the worst cosine against float32.
CPU seconds are the steadier number on a shared machine.
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

import numpy as np

from phi1.engines.embed import load_embedder


def corpus(raw: Path | None, limit: int | None) -> list[str]:
    if raw is not None:
        from phi1.io import read_table

        texts = read_table(raw, columns=["content"]).column("content").to_pylist()
    else:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        texts = []
        for p in sorted(stdlib.rglob("*.py")):
            if "site-packages" in p.parts:
                continue
            try:
                t = p.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            if len(t) >= 200:
                texts.append(t)
    return texts[:limit] if limit else texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--spec", default="minilm")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = ap.parse_args()

    texts = corpus(args.raw, args.limit)
    ref = None
    for dtype in args.dtypes:
        t0 = time.perf_counter()
        emb = load_embedder(args.spec, args.max_tokens, args.batch_size, dtype=dtype)
        load_s = time.perf_counter() - t0
        w0, c0 = time.perf_counter(), time.process_time()
        v = emb.embed(texts, progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        ref = v if ref is None else ref
        cos = float((v * ref).sum(1).min())
        print(
            f"{args.spec} dtype={emb.dtype} files={len(texts)} max_tokens={args.max_tokens} load_s={load_s:.1f} "
            f"wall_s={wall:.1f} cpu_s={cpu:.1f} files_per_s={len(texts) / wall:.1f} "
            f"files_per_cpu_s={len(texts) / cpu:.1f} min_cos_vs_first={cos:.5f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
