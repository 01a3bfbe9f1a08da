"""`phi1 synthesize`: a synthetic textbook and CodeExercises, diverse on purpose and checked.

    phi1 synthesize                                   # params.yaml section `synthesize`
    phi1 synthesize -S synthesize.backend=openai -S synthesize.base_url=http://127.0.0.1:8000/v1

Reads data/codetextbook/filtered; writes data/codetextbook/textbook (sections: prose with
```python blocks), data/codeexercises (prompt = imports + signature + docstring, solution =
body, tests = asserts from the docstring examples) and metrics/synthesize.json.

Every request draws a topic, an audience and, for exercises, a function name from the lists
(phi1/synthesize/data/*.txt unless params name other files) with its own recorded seed.
Backends: `extractive` (default; offline, deterministic, real code mined from the corpus,
see phi1.synthesize.extractive), `openai` (any OpenAI-compatible endpoint, cached and
resumable) and `transformers` (a local HF model dir). Checks, whatever the backend: every
code block and exercise parses, and an exercise whose docstring has examples is kept only
if they pass in the sandbox (namespace isolation only, unless `unsafe_guard` allows the
guard alone where namespaces are unavailable; the sandbox is opened first, so a machine
without namespaces fails before any work, and metrics record `sandbox_isolation`); drops
are counted per reason. Diversity metrics: distinct topics, audiences and function
names, MinHash near-duplicate rate, mean pairwise embedding similarity.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from phi1.config import SynthesizeConfig
from phi1.errors import Phi1Error
from phi1.io import check_output, iter_rows, outputs, shard_files, write_shards
from phi1.synthesize.exercise import Exercise
from phi1.synthesize.lists import Lists, Request, draw_requests, load_lists

TEXTBOOK_SCHEMA = pa.schema([
    ("id", pa.string()), ("topic", pa.string()), ("audience", pa.string()), ("seed", pa.int64()),
    ("text", pa.string()), ("source_ids", pa.list_(pa.string())), ("backend", pa.string()), ("model", pa.string()),
])
EXERCISES_SCHEMA = pa.schema([
    ("id", pa.string()), ("topic", pa.string()), ("audience", pa.string()), ("function_name", pa.string()),
    ("seed", pa.int64()), ("prompt", pa.string()), ("solution", pa.string()), ("tests", pa.string()),
    ("source_id", pa.string()), ("backend", pa.string()), ("model", pa.string()),
])
SHARD_SIZE = 2000


def _id(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


class _Built:
    """Records of one output plus their drop counts."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.dropped: Counter = Counter()
        self.requested = 0


def run(cfg: SynthesizeConfig, filtered: str | Path, textbook_out: str | Path, exercises_out: str | Path,
        metrics_path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the stage; return the metrics it wrote."""
    from phi1.synthesize.checks import check_sandbox
    from phi1.tracking import numeric_metrics, stage_run, tracked_metrics

    start = time.time()
    lists = load_lists(cfg.topics_file, cfg.audiences_file, cfg.function_names_file)
    filtered = Path(filtered)
    if not filtered.exists():
        raise Phi1Error(f"synthesize: input dataset not found: {filtered} (run `phi1 filter` first)")
    for path, kind in ((textbook_out, "dir"), (exercises_out, "dir"), (metrics_path, "file")):
        check_output(path, [filtered], kind)  # before any generation
    with check_sandbox(cfg.check_workers, cfg.unsafe_guard) as box, \
            stage_run("synthesize", cfg, inputs=[filtered], tags={"phi1.sandbox": box.isolation}) as _:
        import mlflow

        embedder = _embedder(cfg)
        if cfg.backend == "extractive":
            textbook, exercises, extra = _extractive(cfg, lists, filtered, embedder, box, progress)
            model = "extractive-v1"
        else:
            textbook, exercises, extra, model = _llm(cfg, lists, box, progress)
        metrics = {
            "backend": cfg.backend,
            "model": model,
            "sandbox_isolation": box.isolation,
            "textbook": _diversity(textbook, "text", cfg, embedder, lists, progress),
            "exercises": _diversity(exercises, "exercise", cfg, embedder, lists, progress),
            **extra,
        }
        metrics["seconds"] = round(time.time() - start, 2)
        with outputs([filtered]) as staged:  # both datasets and their metrics, together
            write_shards(staged.dir(textbook_out), textbook.rows, shard_size=SHARD_SIZE, schema=TEXTBOOK_SCHEMA)
            write_shards(staged.dir(exercises_out), exercises.rows, shard_size=SHARD_SIZE, schema=EXERCISES_SCHEMA)
            staged.json(metrics_path, tracked_metrics(metrics))  # without timings: those go to MLflow
        mlflow.log_metrics(numeric_metrics(metrics))
        mlflow.log_dict(metrics, "synthesize/metrics.json")
        mlflow.log_dict({"textbook": textbook.rows[:3], "exercises": exercises.rows[:5]}, "synthesize/samples.json")
    return metrics


def _embedder(cfg: Any):
    from phi1.engines.embed import load_embedder

    return load_embedder(cfg.embedding, max_tokens=cfg.max_tokens, batch_size=cfg.batch_size)


# ----------------------------------------------------------------------------- extractive


def _extractive(cfg: Any, lists: Lists, filtered: Path, embedder, box, progress: bool):
    from phi1.synthesize import extractive as ex

    import pyarrow.parquet as pq

    from phi1.engines.progress import tracked

    n_files = sum(pq.ParquetFile(f).metadata.num_rows for f in shard_files(filtered))
    rows = tracked(iter_rows(filtered, columns=["id", "path", "content"]), "synthesize: mine files", total=n_files,
                   enabled=progress)
    mined = ex.mine(rows, cfg.min_body_lines, cfg.max_body_lines)
    # Check every candidate that has examples before drawing, so each request gets a working one.
    candidates = [it.exercise for it in mined.exercises]
    verdicts = _check(cfg, candidates, box, progress)
    check_drops: Counter = Counter()
    items = []
    for it, verdict in zip(mined.exercises, verdicts):
        if verdict == "passed" or verdict is None:
            items.append(it)
        else:
            check_drops[f"examples_{verdict}"] += 1
    topic_vecs = embedder.embed(list(lists.topics), progress=False, desc="topics")

    exercises = _Built()
    exercises.requested = cfg.n_exercises
    exercises.dropped.update(check_drops)
    vecs = embedder.embed([it.summary for it in items], progress=progress, desc="topic assignment")
    topic_of, closeness = ex.nearest_topics(topic_vecs, vecs)
    picks, unserved = ex.assign("exercise", [it.exercise.function_name for it in items], topic_of, closeness,
                                lists, cfg.n_exercises, cfg.seed, cfg.max_per_function_name)
    exercises.dropped.update(unserved)
    used: set[tuple[str, str]] = set()
    for req, i in picks:
        it = items[i]
        exercises.rows.append(_exercise_row(req, it.exercise, it.source_id, "extractive", ex.MODEL))
        used.add((it.source_id, it.exercise.function_name))

    textbook = _Built()
    textbook.requested = cfg.n_textbook
    svecs = embedder.embed([s.summary for s in mined.sections], progress=progress, desc="topic assignment")
    s_topic, s_close = ex.nearest_topics(topic_vecs, svecs)
    spicks, sunserved = ex.assign("textbook", [s.source_id for s in mined.sections], s_topic, s_close, lists,
                                  cfg.n_textbook, cfg.seed)
    textbook.dropped.update(sunserved)
    for req, i in spicks:
        sec = mined.sections[i]
        text, blocks = ex.section_text(sec, req.topic, req.audience, cfg.max_functions_per_section, exclude=used)
        if blocks == 0:
            textbook.dropped["no_code"] += 1  # every documented function went to the exercises
            continue
        textbook.rows.append(_textbook_row(req, text, [sec.source_id], "extractive", ex.MODEL))
    extra = {"mined": {"functions_seen": mined.functions_seen, "exercise_candidates": len(mined.exercises),
                       "exercise_candidates_checked": len(items), "section_candidates": len(mined.sections),
                       "dropped": dict(sorted(mined.dropped.items()))}}
    return textbook, exercises, extra


# ----------------------------------------------------------------------------- LLM backends


def _llm(cfg: Any, lists: Lists, box, progress: bool):
    from phi1.synthesize import generate as g

    gen = g.OpenAIGenerator(cfg, progress) if cfg.backend == "openai" else g.TransformersGenerator(cfg, progress)
    textbook = _Built()
    textbook.requested = cfg.n_textbook
    treqs, _ = draw_requests("textbook", cfg.n_textbook, lists, cfg.seed)
    answers = gen.generate([g.textbook_messages(r) for r in treqs], [r.seed for r in treqs], "textbook")
    seen: set[str] = set()
    for req, answer in zip(treqs, answers):
        text = g.parse_textbook(answer)
        if text in ("empty_response", "no_code", "code_unparsable"):
            textbook.dropped[text] += 1
        elif text in seen:
            textbook.dropped["duplicate"] += 1
        else:
            seen.add(text)
            textbook.rows.append(_textbook_row(req, text, [], cfg.backend, gen.model))

    exercises = _Built()
    exercises.requested = cfg.n_exercises
    ereqs, exhausted = draw_requests("exercise", cfg.n_exercises, lists, cfg.seed, cfg.max_per_function_name)
    if exhausted:
        exercises.dropped["names_exhausted"] = exhausted
    answers = gen.generate([g.exercise_messages(r) for r in ereqs], [r.seed for r in ereqs], "exercises")
    parsed: list[tuple[Request, Exercise]] = []
    seen = set()
    for req, answer in zip(ereqs, answers):
        got = g.parse_exercise(answer, req.function_name or "")
        if isinstance(got, str):
            exercises.dropped[got] += 1
        elif got.prompt + got.solution in seen:
            exercises.dropped["duplicate"] += 1
        else:
            seen.add(got.prompt + got.solution)
            parsed.append((req, got))
    verdicts = _check(cfg, [e for _, e in parsed], box, progress)
    for (req, e), verdict in zip(parsed, verdicts):
        if verdict == "passed" or verdict is None:
            exercises.rows.append(_exercise_row(req, e, None, cfg.backend, gen.model))
        else:
            exercises.dropped[f"examples_{verdict}"] += 1
    return textbook, exercises, {}, gen.model


# ----------------------------------------------------------------------------- shared


def _check(cfg: Any, exercises: list[Exercise], box, progress: bool) -> list[Optional[str]]:
    """Sandbox verdict per exercise; None for an exercise without examples (nothing to run)."""
    from phi1.synthesize.checks import run_examples

    idx = [i for i, e in enumerate(exercises) if e.tests.strip()]
    verdicts = run_examples([exercises[i].program for i in idx], timeout=cfg.check_timeout,
                            memory_bytes=cfg.check_memory_mb << 20, sandbox=box, progress=progress)
    out: list[Optional[str]] = [None] * len(exercises)
    for i, v in zip(idx, verdicts):
        out[i] = v
    return out


def _exercise_row(req: Request, e: Exercise, source_id: Optional[str], backend: str, model: str) -> dict[str, Any]:
    return {
        "id": _id("exercise", e.prompt, e.solution), "topic": req.topic, "audience": req.audience,
        "function_name": e.function_name, "seed": req.seed, "prompt": e.prompt, "solution": e.solution,
        "tests": e.tests, "source_id": source_id, "backend": backend, "model": model,
    }


def _textbook_row(req: Request, text: str, source_ids: list[str], backend: str, model: str) -> dict[str, Any]:
    return {
        "id": _id("textbook", text), "topic": req.topic, "audience": req.audience, "seed": req.seed,
        "text": text, "source_ids": source_ids, "backend": backend, "model": model,
    }


def _diversity(built: _Built, kind: str, cfg: Any, embedder, lists: Lists, progress: bool) -> dict[str, Any]:
    from phi1.synthesize.diversity import mean_pairwise_similarity, near_duplicate_rate

    rows = built.rows
    texts = [r["text"] for r in rows] if kind == "text" else [r["prompt"] + r["solution"] for r in rows]
    vecs = embedder.embed(texts, progress=progress, desc=f"diversity ({'textbook' if kind == 'text' else 'exercises'})")
    sim = mean_pairwise_similarity(vecs)
    topics = {r["topic"] for r in rows}
    out: dict[str, Any] = {
        "requested": built.requested,
        "n": len(rows),
        "dropped": dict(sorted(built.dropped.items())),
        "distinct_topics": len(topics),
        "topic_coverage": round(len(topics) / len(lists.topics), 4),
        "distinct_audiences": len({r["audience"] for r in rows}),
        "near_duplicate_rate": round(near_duplicate_rate(texts, cfg.near_dup_threshold), 4),
        "mean_pairwise_similarity": None if sim is None else round(sim, 4),
    }
    if kind == "exercise":
        out["distinct_function_names"] = len({r["function_name"] for r in rows})
        out["with_tests"] = sum(1 for r in rows if r["tests"].strip())
    else:
        from phi1.engines.markdown import python_blocks

        out["code_blocks"] = sum(len(python_blocks(t)) for t in texts)
    return out



__all__ = ["run", "TEXTBOOK_SCHEMA", "EXERCISES_SCHEMA"]
