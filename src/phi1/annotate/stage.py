"""`phi1 annotate`: rate a seeded sample of data/raw for educational value.

    phi1 annotate                                   # heuristic backend, params.yaml
    phi1 annotate -S annotate.backend=openai -S annotate.base_url=http://127.0.0.1:8000/v1

phi-1 had GPT-4 rate ~100k files for "educational value for a student whose goal is to
learn basic coding concepts"; a classifier (stage `filter`) then learns those ratings.
Two annotator backends write the same table (data/annotations, one row per rated file:
id, score in [0, 1], label, rationale, backend, model, rubric_<part>):

`openai`: the paper's annotation, through any OpenAI-compatible chat endpoint
(`phi1.engines.llm.ChatClient`: concurrency, retries, a response cache so a rerun costs
nothing). The model answers JSON {"score": 0-10, "rationale": ...}; the score is divided
by 10. An answer that does not parse is counted (`rejected_unparsable`) and its file left
out. The rubric columns are null.

`heuristic` (default, offline, deterministic): a PROXY for that judgement, not GPT-4 and
not validated against GPT-4 ratings. It reads the file's syntax tree and tokens and
scores eight rubric parts in [0, 1] (columns rubric_<part>); the score is their
weighted mean (RUBRIC_WEIGHTS, sum 1). Each part ramps linearly between the two points:

    part            weight  what is measured                                  0 at .. 1 at
    docstrings      0.30    share of module, classes and non-dunder functions    0% .. 70%
                            that have a docstring
    logic           0.20    mean over functions of: 1 with a branch, loop,
                            comprehension or try; 0.5 with only a computed
                            return; a unit test (assertion-dominated body)
                            0.5 with control flow, else 0
    comments        0.10    comments per code line (docstring lines excluded)    2% .. 20%
    self_contained  0.10    mean over functions of their size in lines, 0 for  60 .. 15 lines
                            one using global/nonlocal, half for a unit test
                            (it needs a runner and fixtures); no functions: 0
    length          0.10    code lines: rising to 20, full up to 250, then     1000 .. 250 lines
    data            0.10    literal characters (docstrings excluded, at most   50% .. 20%
                            200 per literal) among those of all significant
                            tokens, times the share of lines outside literal
                            tables of 20+ constants
    names           0.05    share of bound names (defs, args, assignments)      80% .. 100%
                            with 3+ characters
    imports         0.05    share of imports from the standard library
                            (relative ones half), times 1 .. 0.5 as the
                            import count goes 5 .. 20; no imports: 1

Calibration (the rubric was tuned, the 0.5 threshold kept): the Python 3.11 standard
library after `phi1 ingest` defaults, 1512 files, all rated: mean score 0.55, 55%
positive; test files (893) mean 0.45, 30% positive; other modules (619) mean 0.69, 91%
positive. bisect, heapq, textwrap, graphlib 0.88-0.94; test_bisect 0.47; stringprep
(generated tables) 0.40; tkinter/constants 0.25; this.py (one big string) 0.15.
A file that does not parse gets 0 for the tree-based parts. The rationale names the
strong (>= 0.7) and weak (< 0.4) parts.
"""

from __future__ import annotations

import ast
import io
import json
import random
import re
import statistics
import sys
import time
import tokenize
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from phi1.config import AnnotateConfig
from phi1.errors import Phi1Error
from phi1.io import check_output, outputs, shard_files, write_shards

HEURISTIC_MODEL = "heuristic-v1"

RUBRIC_WEIGHTS: dict[str, float] = {
    "docstrings": 0.30,
    "logic": 0.20,
    "comments": 0.10,
    "self_contained": 0.10,
    "length": 0.10,
    "data": 0.10,
    "names": 0.05,
    "imports": 0.05,
}
"""Rubric part -> weight in the heuristic score (they sum to 1)."""

RUBRIC_LABELS = {
    "docstrings": "docstrings",
    "comments": "comments",
    "names": "meaningful names",
    "self_contained": "small self-contained functions",
    "logic": "basic control flow",
    "length": "moderate length",
    "imports": "few non-stdlib imports",
    "data": "code rather than data",
}

RUBRIC_COLUMNS = [f"rubric_{p}" for p in RUBRIC_WEIGHTS]

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("score", pa.float64()),
        ("label", pa.int64()),
        ("rationale", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        *[(c, pa.float64()) for c in RUBRIC_COLUMNS],
    ]
)
"""data/annotations columns (see the dataset contract)."""

# The paper's wording (Gunasekar et al. 2023, section 2.1), asking for a parseable answer.
SYSTEM_PROMPT = "You are an experienced programming teacher who rates code for a teaching dataset."
USER_PROMPT = """\
Determine the educational value of the following code file for a student whose goal is \
to learn basic coding concepts.

Answer with JSON only, no other text: {{"score": <integer from 0 (no value) to 10 \
(excellent textbook material)>, "rationale": "<one sentence>"}}

File: {path}
```python
{code}
```"""
GENERATION_PARAMS = {"temperature": 0.0, "max_tokens": 200}
"""Sent with every rating request (and part of the cache key)."""


# --------------------------------------------------------------------------- heuristic


@dataclass(frozen=True)
class Rating:
    score: float
    rationale: str
    rubric: dict[str, float] | None = None


def _clip(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else float(x)


def _ramp(x: float, zero: float, one: float) -> float:
    """0 at `zero`, 1 at `one`, linear between (either direction)."""
    return _clip((x - zero) / (one - zero))


_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_CONTROL = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.IfExp, ast.ListComp,
            ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Match)
_LITERALS = (ast.Constant, ast.UnaryOp)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _docstring_node(node: ast.AST) -> ast.Constant | None:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].value
    return None


def _span(node: ast.AST) -> int:
    return (getattr(node, "end_lineno", None) or node.lineno) - node.lineno + 1


def _is_assertion(stmt: ast.stmt) -> bool:
    """`assert ...` or a `self.assertX(...)`/`self.fail(...)` call statement."""
    if isinstance(stmt, ast.Assert):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        f = stmt.value.func
        return isinstance(f, ast.Attribute) and (f.attr.startswith("assert") or f.attr == "fail")
    return False


def _constant_table_size(node: ast.AST) -> int:
    """Number of constant elements of a list/tuple/set/dict display made only of literals."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        elts = node.elts
    elif isinstance(node, ast.Dict):
        elts = [k for k in node.keys if k is not None] + node.values
    else:
        return 0
    n = 0
    for e in elts:
        if isinstance(e, _LITERALS):
            n += 1
        else:
            inner = _constant_table_size(e)
            if not inner:
                return 0
            n += inner
    return n


LITERAL_CAP = 200


def _token_stats(text: str, docstring_lines: set[int]) -> tuple[int, int, int]:
    """(comments, characters of literal tokens, characters of significant tokens).
    Characters, not tokens: a table of strings is data however it is split. One literal
    counts at most LITERAL_CAP characters, so a single prose string (heapq's
    `__about__`) does not make a module "data". Docstrings are not literals."""
    comments = literals = significant = 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                # Shebangs and coding lines say nothing to a reader.
                if not (tok.start[0] <= 2 and re.match(r"#!|#.*coding[:=]", tok.string)):
                    comments += 1
            elif tok.type in (tokenize.NUMBER, tokenize.STRING):
                if tok.type == tokenize.STRING and tok.start[0] in docstring_lines:
                    continue
                n = min(len(tok.string), LITERAL_CAP)
                literals += n
                significant += n
            elif tok.type in (tokenize.NAME, tokenize.OP):
                significant += len(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return comments, literals, significant


def measure(text: str) -> dict[str, Any]:
    """The raw measurements the rubric is built from (shares, counts, function sizes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old files
        try:
            tree: ast.Module | None = ast.parse(text)
        except (SyntaxError, ValueError):
            tree = None
    m: dict[str, Any] = {
        "parsed": tree is not None, "doc_coverage": 0.0, "name_share": 0.0, "functions": [],
        "imports": [], "table_lines": 0,
    }
    docstring_lines: set[int] = set()
    if tree is not None:
        units = [tree]
        names: set[str] = set()
        table_lines: set[int] = set()
        # One pass with an explicit stack (deep nesting must not hit the recursion
        # limit); each node carries the facts of its innermost enclosing function.
        stack: list[tuple[ast.AST, dict[str, Any] | None]] = [(tree, None)]
        while stack:
            node, owner = stack.pop()
            if isinstance(node, (*_FUNCS, ast.ClassDef)):
                names.add(node.name)
                if not _is_dunder(node.name):
                    units.append(node)
                if isinstance(node, _FUNCS):
                    owner = _function_facts(node)
                    m["functions"].append(owner)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Import):
                m["imports"] += [_stdlib_share(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                m["imports"].append(0.5 if node.level else _stdlib_share(node.module or ""))
            elif owner is not None and isinstance(node, (ast.Global, ast.Nonlocal)):
                owner["global"] = True
            elif owner is not None and isinstance(node, _CONTROL):
                owner["control"] = True
            elif owner is not None and isinstance(node, ast.Return) and node.value is not None \
                    and not isinstance(node.value, (ast.Constant, ast.Name)):
                owner["computed_return"] = True
            elif _constant_table_size(node) >= 20:
                table_lines.update(range(node.lineno, node.lineno + _span(node)))
                continue  # its elements are data, nothing more to learn inside
            stack.extend((child, owner) for child in ast.iter_child_nodes(node))
        documented = 0
        for u in units:
            doc = _docstring_node(u)
            if doc is not None:
                documented += 1
                docstring_lines.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
        m["doc_coverage"] = documented / len(units)
        names -= {"_", "self", "cls"}
        m["name_share"] = sum(1 for n in names if len(n.strip("_")) >= 3) / len(names) if names else 0.0
        m["table_lines"] = len(table_lines)
    m["code_lines"] = sum(
        1 for i, ln in enumerate(text.splitlines(), 1)
        if ln.strip() and not ln.lstrip().startswith("#") and i not in docstring_lines
    )
    comments, literals, significant = _token_stats(text, docstring_lines)
    m["comment_density"] = comments / m["code_lines"] if m["code_lines"] else 0.0
    m["literal_share"] = literals / significant if significant else 1.0
    return m


def rubric(text: str) -> dict[str, float]:
    """The heuristic rubric parts of one Python file, each in [0, 1] (see module docstring)."""
    return rubric_from(measure(text))


def rubric_from(m: dict[str, Any]) -> dict[str, float]:
    """Rubric parts from `measure`'s output; the ramps are the module docstring's table."""
    parts = dict.fromkeys(RUBRIC_WEIGHTS, 0.0)
    code = m["code_lines"]
    if m["parsed"]:
        parts["docstrings"] = _ramp(m["doc_coverage"], 0.0, 0.7)
        parts["names"] = _ramp(m["name_share"], 0.8, 1.0)
        funcs = m["functions"]
        if funcs:
            parts["self_contained"] = sum(_contained(f) for f in funcs) / len(funcs)
            parts["logic"] = sum(_logic(f) for f in funcs) / len(funcs)
        imports = m["imports"]
        parts["imports"] = sum(imports) / len(imports) * (0.5 + 0.5 * _ramp(len(imports), 20, 5)) if imports else 1.0
    if code:
        parts["comments"] = _ramp(m["comment_density"], 0.02, 0.2)
        parts["length"] = _ramp(code, 0, 20) if code < 20 else _ramp(code, 1000, 250)
        parts["data"] = _ramp(m["literal_share"], 0.5, 0.2) * (1 - _clip(m["table_lines"] / code))
    return {k: round(v, 4) for k, v in parts.items()}


def _contained(f: dict[str, Any]) -> float:
    """Short and free of global state; a unit test (it needs its runner and fixtures) half."""
    if f["global"]:
        return 0.0
    return _ramp(f["lines"], 60, 15) * (0.5 if f["test"] else 1.0)


def _logic(f: dict[str, Any]) -> float:
    """Exercises basic concepts: control flow, else a computed return value. A unit test
    checks code rather than showing how to write it: half credit at most."""
    if f["test"]:
        return 0.5 if f["control"] else 0.0
    return 1.0 if f["control"] else 0.5 if f["computed_return"] else 0.0


def _function_facts(f: ast.AST) -> dict[str, Any]:
    """A function's size and whether it is a unit test; `measure` fills in the rest while
    it walks the body."""
    body = [s for s in f.body if s is not _docstring_stmt(f)]  # type: ignore[attr-defined]
    return {
        "lines": _span(f), "global": False, "control": False, "computed_return": False,
        # Assertion-dominated bodies are unit tests.
        "test": bool(body) and sum(map(_is_assertion, body)) >= len(body) / 2,
    }


def _docstring_stmt(node: ast.AST) -> ast.stmt | None:
    return node.body[0] if _docstring_node(node) is not None else None  # type: ignore[attr-defined]


def _stdlib_share(module: str) -> float:
    top = module.split(".", 1)[0]
    return 1.0 if top in sys.stdlib_module_names or top == "__future__" else 0.0


def heuristic_rating(text: str) -> Rating:
    """Score and rationale of one file under the heuristic rubric."""
    parts = rubric(text)
    score = round(sum(RUBRIC_WEIGHTS[p] * v for p, v in parts.items()), 4)
    return Rating(score=_clip(score), rationale=_rationale(score, parts), rubric=parts)


def _rationale(score: float, parts: dict[str, float]) -> str:
    strong = [RUBRIC_LABELS[p] for p, v in parts.items() if v >= 0.7]
    weak = [RUBRIC_LABELS[p] for p, v in parts.items() if v < 0.4]
    bits = []
    if strong:
        bits.append("strong on " + ", ".join(strong))
    if weak:
        bits.append("weak on " + ", ".join(weak))
    return f"Heuristic educational value {score:.2f}: " + ("; ".join(bits) or "no part stands out") + "."


# --------------------------------------------------------------------------- openai


def rating_messages(path: str, content: str, max_chars: int) -> list[dict[str, str]]:
    """The chat messages asking an LLM to rate one file (the paper's instruction)."""
    code = content if len(content) <= max_chars else content[:max_chars] + "\n# ... (truncated)"
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_PROMPT.format(path=path, code=code)},
    ]


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def parse_rating(answer: str | None) -> Rating | None:
    """Rating from an LLM answer: JSON {"score": 0..10, "rationale": str}, bare or in a
    ```json fence, or the first JSON object in the text; None when no such object exists
    or the score is not a number in [0, 10]."""
    if not answer:
        return None
    candidates = [answer.strip(), *(m.strip() for m in _FENCE.findall(answer))]
    decoder = json.JSONDecoder()
    start = answer.find("{")
    while start != -1:
        try:
            obj, _ = decoder.raw_decode(answer, start)
            candidates.append(obj)
            break
        except ValueError:
            start = answer.find("{", start + 1)
    for c in candidates:
        obj = c
        if isinstance(c, str):
            try:
                obj = json.loads(c)
            except ValueError:
                continue
        if not isinstance(obj, dict):
            continue
        obj = {str(k).lower(): v for k, v in obj.items()}  # {"Score": 7} is common enough
        score = obj.get("score")
        if isinstance(score, str):
            try:
                score = float(score.strip())
            except ValueError:
                continue
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 10:
            continue
        rationale = obj.get("rationale")
        rationale = " ".join(rationale.split()) if isinstance(rationale, str) else ""
        return Rating(score=round(float(score) / 10, 4), rationale=rationale or "(the model gave no rationale)")
    return None


# --------------------------------------------------------------------------- stage


def sample_ids(ids: Iterable[str], size: int, seed: int) -> list[str]:
    """A seeded sample of `size` ids (all when fewer), independent of shard order."""
    pool = sorted(set(ids))
    if size >= len(pool):
        return pool
    return sorted(random.Random(seed).sample(pool, size))


def _load_sample(raw: Path, cfg: AnnotateConfig) -> tuple[int, list[dict[str, Any]]]:
    files = shard_files(raw) if raw.exists() else []
    if not files:
        raise Phi1Error(f"annotate: input dataset {raw} is missing or has no parquet shards (run `phi1 ingest`)")
    need = {"id", "content"}
    ids: list[str] = []
    for f in files:
        names = set(pq.read_schema(f).names)
        if not need <= names:
            raise Phi1Error(f"annotate: {f} lacks column(s) {', '.join(sorted(need - names))}")
        ids += pq.read_table(f, columns=["id"]).column("id").to_pylist()
    if not ids:
        raise Phi1Error(f"annotate: input dataset {raw} has no rows")
    if len(set(ids)) != len(ids):
        raise Phi1Error(f"annotate: {raw} has duplicate ids; the id column must be unique")
    chosen = sample_ids(ids, cfg.sample_size, cfg.seed)
    wanted = pa.array(chosen, pa.string())
    rows: list[dict[str, Any]] = []
    for f in files:
        names = set(pq.read_schema(f).names)
        cols = ["id", "content"] + (["path"] if "path" in names else [])
        t = pq.read_table(f, columns=cols)
        rows += t.filter(pc.is_in(t.column("id"), value_set=wanted)).to_pylist()
    rows.sort(key=lambda r: r["id"])
    return len(ids), rows


def _rate_heuristic(rows: list[dict[str, Any]]) -> list[Rating | None]:
    from phi1.engines.progress import tracked

    return [heuristic_rating(r["content"] or "") for r in tracked(rows, "annotate (heuristic)")]


def _rate_openai(cfg: AnnotateConfig, rows: list[dict[str, Any]]):
    """(ratings, raw answers, client counters)."""
    from phi1.engines.llm import ChatClient

    client = ChatClient(
        cfg.base_url, cfg.model, api_key_env=cfg.api_key_env or None, concurrency=cfg.concurrency,
        max_retries=cfg.max_retries, timeout=cfg.timeout, cache_dir=cfg.cache_path, backoff=cfg.backoff,
    )
    batch = [rating_messages(r.get("path") or r["id"], r["content"] or "", cfg.max_chars) for r in rows]
    answers = client.complete_many(batch, description=f"annotate ({cfg.model})", **GENERATION_PARAMS)
    return [parse_rating(a) for a in answers], answers, client.stats.as_dict()


def _records(cfg: AnnotateConfig, model: str, rows, ratings, answers):
    """(annotation rows, rejected {id, answer} for the unparsable answers)."""
    table, rejected = [], []
    for row, rating, answer in zip(rows, ratings, answers):
        if rating is None:
            rejected.append({"id": row["id"], "answer": (answer or "")[:500]})
            continue
        rec = {
            "id": row["id"], "score": rating.score, "label": int(rating.score >= cfg.label_threshold),
            "rationale": rating.rationale, "backend": cfg.backend, "model": model,
        }
        for part in RUBRIC_WEIGHTS:
            rec[f"rubric_{part}"] = rating.rubric[part] if rating.rubric else None
        table.append(rec)
    return table, rejected


def _metrics(cfg: AnnotateConfig, model: str, table: list[dict[str, Any]], n_raw: int, n_sampled: int,
             n_rejected: int) -> dict[str, Any]:
    scores = [r["score"] for r in table]
    metrics: dict[str, Any] = {
        "n": len(table),
        "n_raw": n_raw,
        "n_sampled": n_sampled,
        "mean_score": round(statistics.fmean(scores), 4),
        "median_score": round(statistics.median(scores), 4),
        "std_score": round(statistics.pstdev(scores), 4),
        "positive_fraction": round(sum(r["label"] for r in table) / len(table), 4),
        "label_threshold": cfg.label_threshold,
        "backend": cfg.backend,
        "model": model,
        "rejected_unparsable": n_rejected,
    }
    if cfg.backend == "heuristic":
        metrics["rubric_mean"] = {p: round(statistics.fmean(r[f"rubric_{p}"] for r in table), 4) for p in RUBRIC_WEIGHTS}
    return metrics


def run(cfg: AnnotateConfig, raw: Path, out: Path, metrics_path: Path) -> dict[str, Any]:
    """Rate a seeded sample of `raw`, write the annotations to `out` and metrics to
    `metrics_path`; return the metrics."""
    import mlflow

    from phi1.tracking import numeric_metrics, stage_run, tracked_metrics

    raw, out, metrics_path = Path(raw), Path(out), Path(metrics_path)
    t0 = time.perf_counter()
    n_raw, rows = _load_sample(raw, cfg)  # bad input fails before an MLflow run opens
    check_output(out, [raw])  # and a bad output path before any LLM call
    check_output(metrics_path, [raw], "file")
    with stage_run("annotate", cfg, inputs=[raw]):
        if cfg.backend == "heuristic":
            model, llm_stats = HEURISTIC_MODEL, {}
            ratings, answers = _rate_heuristic(rows), [None] * len(rows)
        else:
            model = cfg.model
            ratings, answers, llm_stats = _rate_openai(cfg, rows)
        table, rejected = _records(cfg, model, rows, ratings, answers)
        if not table:
            raise Phi1Error(
                f"annotate: none of the {len(rows)} answers from {cfg.base_url} parsed as a rating "
                '(expected JSON {"score": 0-10, "rationale": ...})'
            )
        metrics = _metrics(cfg, model, table, n_raw, len(rows), len(rejected))
        metrics.update(llm_stats)
        metrics["seconds"] = round(time.perf_counter() - t0, 2)

        with outputs([raw]) as staged:
            write_shards(staged.dir(out), table, shard_size=10_000, schema=SCHEMA)
            staged.json(metrics_path, tracked_metrics(metrics))  # without timings: those go to MLflow

        mlflow.log_metrics(numeric_metrics(metrics))
        mlflow.set_tag("annotate.model", model)
        paths = {r["id"]: r.get("path") for r in rows}
        mlflow.log_table(
            {**{c: [r[c] for r in table] for c in SCHEMA.names}, "path": [paths[r["id"]] for r in table]},
            artifact_file="annotations.json",
        )
        if rejected:
            mlflow.log_dict({"rejected_unparsable": rejected}, "annotate/rejected.json")
    return metrics



__all__ = [
    "RUBRIC_WEIGHTS", "SCHEMA", "Rating", "heuristic_rating", "parse_rating", "rating_messages",
    "rubric", "run", "sample_ids",
]
