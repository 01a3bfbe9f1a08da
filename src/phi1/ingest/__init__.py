"""`phi1 ingest`: read code sources, drop unusable files with counted reasons, deduplicate.

    phi1 ingest --out data/raw --metrics metrics/ingest.json    # params.yaml section `ingest`
    dvc repro ingest

Modules: sources (listing, safe reads), readers (datatrove readers per source kind),
stackoverflow (answers' code blocks), filters (datatrove BaseFilters, one per drop
reason), dedup (exact + MinHash near duplicates), stage (the stage's `run`).
"""

from phi1.ingest.stage import run

__all__ = ["run"]
