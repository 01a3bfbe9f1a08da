"""Stage `tokenize`: a byte-level BPE tokenizer and packed token shards.

    phi1 tokenize                  # params.yaml section `tokenize` (inputs: tokenize.pretrain_inputs)
    phi1 tokenize -S 'tokenize.pretrain_inputs=[data/raw:content]' -S tokenize.max_tokens=2000000
    phi1 tokenize --pretrain-input data/codetextbook/filtered:content \
                  --pretrain-input data/codetextbook/textbook:text     # overrides the param

Tokenizer: trained on the pretraining text with HF tokenizers (byte-level BPE, so any
byte sequence encodes; `<|endoftext|>` is its one special token and plays bos, eos and
pad, as in codegen's tokenizer), or copied from a local HF tokenizer directory
(`tokenize.tokenizer: path/to/codegen-350M-mono` is the paper's choice). Saved with
`save_pretrained` so `AutoTokenizer.from_pretrained("tokenizer")` loads it.

Pretraining shards (paper, section 2): documents joined by `<|endoftext|>`, the stream
cut into `seq_len` rows; the last partial row is dropped. `max_tokens` cuts the train
split to an exact token budget (a content-hash-ordered sample of the train documents
across all inputs, the last one cut), so that variants of the data are compared at
equal budgets; too few tokens is an error. Finetuning shards: each
exercise is `prompt + solution + <|endoftext|>`, prompt and solution encoded apart (as
the model sees a prompt alone at evaluation), packed greedily without splitting an
exercise that fits, padded with `<|endoftext|>`; a parallel mask marks padding (0),
prompt (1) and solution (2) tokens, so finetuning can take the loss on solutions only.

Held-out validation: the documents whose sha1 is among the smallest `val_fraction` of
all (at least one), so the split is stable under reordering and never cuts a document.
See `phi1.engines.training.data` for the on-disk layout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq

from phi1.config import TokenizeConfig
from phi1.errors import Phi1Error
from phi1.engines.progress import tracked
from phi1.engines.training.tokenizers import load_tokenizer, tokenizer_fingerprint
from phi1.io import check_output, outputs, shard_files, write_json
from phi1.engines.training.data import MASK_PAD, MASK_PROMPT, MASK_SOLUTION, META

EOS = "<|endoftext|>"
FINETUNE_COLUMNS = ("prompt", "solution")


# --------------------------------------------------------------------------- inputs


def check_dataset(path: Path, columns: Sequence[str]) -> None:
    """A listed input must exist and hold the string columns we read: else a Phi1Error."""
    if not path.exists():
        raise Phi1Error(f"tokenize input not found: {path}")
    files = shard_files(path)
    if not files:
        raise Phi1Error(f"tokenize input {path} has no parquet shards")
    schema = pq.read_schema(files[0])
    for col in columns:
        if col not in schema.names:
            raise Phi1Error(f"tokenize input {path}: no column {col!r} (columns: {', '.join(schema.names)})")


def iter_column(path: Path, column: str) -> Iterator[str]:
    for f in shard_files(path):
        for text in pq.read_table(f, columns=[column]).column(column).to_pylist():
            if text:
                yield text


def doc_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def val_keys(keys: Iterable[bytes], fraction: float) -> set[bytes]:
    """The smallest `fraction` of the keys (at least one): the held-out documents."""
    ordered = sorted(set(keys))
    k = max(1, round(fraction * len(ordered))) if ordered else 0
    return set(ordered[:k])


# --------------------------------------------------------------------------- tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int):
    """Train a byte-level BPE with `<|endoftext|>` and wrap it as an HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
    )


def model_vocab_size(tokenizer) -> int:
    """Embedding rows for this tokenizer: its length rounded up to a multiple of 64 (GPU
    matmul tiles; the paper's 51200 rows for codegen's 50295 tokens are rounded too)."""
    return int(math.ceil(len(tokenizer) / 64) * 64)


# --------------------------------------------------------------------------- shards


def _save(path: Path, array: np.ndarray) -> None:
    """np.save, whose short write on a full disk says only `N requested and M written`:
    re-raised as the OSError it is, with the errno and the path."""
    import errno
    import os
    import shutil

    try:
        np.save(path, array)
    except OSError as exc:
        if exc.errno is not None:
            raise
        full = shutil.disk_usage(path.parent).free < array.nbytes
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from exc

class ShardWriter:
    """Collects rows of `seq_len` tokens (and masks) and saves them as .npy shards."""

    def __init__(self, folder: Path, split: str, seq_len: int, dtype, shard_tokens: int, with_mask: bool):
        self.folder, self.split, self.seq_len, self.dtype = folder, split, seq_len, dtype
        self.rows_per_shard = max(1, shard_tokens // seq_len)
        self.with_mask = with_mask
        self.rows: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.shards: list[dict] = []
        self.n_rows = 0

    def add(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> None:
        self.rows.append(np.asarray(tokens, dtype=self.dtype))
        if self.with_mask:
            self.masks.append(np.asarray(mask, dtype=np.uint8))
        self.n_rows += 1
        if len(self.rows) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        name = f"{self.split}-{len(self.shards):05d}"
        _save(self.folder / f"{name}.npy", np.stack(self.rows))
        if self.with_mask:
            _save(self.folder / f"{name}.mask.npy", np.stack(self.masks))
        self.shards.append({"file": f"{name}.npy", "rows": len(self.rows)})
        self.rows, self.masks = [], []


class StreamPacker:
    """Pretraining packing: a token stream cut into rows of `seq_len`."""

    def __init__(self, writer: ShardWriter):
        self.writer = writer
        self.buf = np.empty(0, dtype=np.int64)
        self.n_tokens = 0

    def add(self, ids: Sequence[int]) -> None:
        self.n_tokens += len(ids)
        self.buf = np.concatenate([self.buf, np.asarray(ids, dtype=np.int64)])
        n = len(self.buf) // self.writer.seq_len
        for i in range(n):
            self.writer.add(self.buf[i * self.writer.seq_len:(i + 1) * self.writer.seq_len])
        self.buf = self.buf[n * self.writer.seq_len:]

    def close(self) -> int:
        """Flush; return the number of tokens dropped in the last partial row."""
        self.writer.flush()
        return len(self.buf)


class ExercisePacker:
    """Finetuning packing: whole exercises per row where they fit, padding masked out."""

    def __init__(self, writer: ShardWriter, pad_id: int):
        self.writer, self.pad_id = writer, pad_id
        self.tokens: list[int] = []
        self.mask: list[int] = []
        self.n_tokens = self.n_pad = self.n_solution = self.n_split = 0

    def _emit(self) -> None:
        if not self.tokens:
            return
        pad = self.writer.seq_len - len(self.tokens)
        self.n_pad += pad
        self.writer.add(np.array(self.tokens + [self.pad_id] * pad), np.array(self.mask + [MASK_PAD] * pad))
        self.tokens, self.mask = [], []

    def add(self, prompt: Sequence[int], solution: Sequence[int]) -> None:
        ids = list(prompt) + list(solution)
        mask = [MASK_PROMPT] * len(prompt) + [MASK_SOLUTION] * len(solution)
        self.n_tokens += len(ids)
        self.n_solution += len(solution)
        L = self.writer.seq_len
        if len(self.tokens) + len(ids) > L:
            self._emit()
        if len(ids) > L:  # longer than a row: split across rows (counted)
            self.n_split += 1
        for i in range(0, len(ids), L):
            self.tokens += ids[i:i + L]
            self.mask += mask[i:i + L]
            if len(self.tokens) == L:
                self._emit()

    def close(self) -> None:
        self._emit()
        self.writer.flush()


def _dtype(vocab: int):
    return np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32


def _batches(it: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_pretrain(tokenizer, inputs: Sequence[tuple[Path, str]], out: Path, seq_len: int,
                      val_fraction: float, shard_tokens: int, held_out: set[bytes],
                      max_tokens: int | None = None) -> dict:
    """Encode and pack the pretraining documents into `out`; return its split summary.

    `max_tokens` cuts the train split to exactly that many tokens, taken as a uniform
    sample of the train documents across all inputs: documents are ranked by the sha1 of
    their text (a seeded-by-content random order), taken in that order until the budget
    is filled, the one crossing it cut, and written in input order. A cap by input order
    would keep only the first input whenever it alone fills the budget. Capping costs a
    second encoding pass; the summary reports the train tokens before the cap, and a
    budget the inputs cannot fill is an error, never a silently smaller split."""
    backend = tokenizer.backend_tokenizer
    eos = tokenizer.eos_token_id
    dtype = _dtype(model_vocab_size(tokenizer))

    def encoded() -> Iterator[tuple[bytes, str, list[int]]]:
        for path, column in inputs:
            for batch in _batches(tracked(iter_column(path, column), f"encode {path}"), 512):
                for text, enc in zip(batch, backend.encode_batch(batch, add_special_tokens=False)):
                    yield doc_key(text), text, enc.ids + [eos]

    available = {"documents": 0, "tokens": 0}  # train split before the cap
    allowance: dict[bytes, int] | None = None  # train doc key -> tokens it may contribute
    if max_tokens is not None:
        lengths: dict[bytes, int] = {}
        for key, _, ids in encoded():
            if key not in held_out:
                available["documents"] += 1
                available["tokens"] += len(ids)
                lengths.setdefault(key, len(ids))
        if available["tokens"] < max_tokens:
            names = ", ".join(f"{p}:{c}" for p, c in inputs)
            raise Phi1Error(
                f"tokenize.max_tokens={max_tokens}: the pretraining inputs hold only {available['tokens']} train "
                f"tokens ({max_tokens - available['tokens']} short): {names}"
            )
        allowance, left = {}, max_tokens
        for key in sorted(lengths):
            if left <= 0:
                break
            allowance[key] = min(lengths[key], left)
            left -= allowance[key]

    writers = {s: ShardWriter(out, s, seq_len, dtype, shard_tokens, with_mask=False) for s in ("train", "val")}
    packers = {s: StreamPacker(w) for s, w in writers.items()}
    docs = {"train": 0, "val": 0}
    chars = 0
    for key, text, ids in encoded():
        split = "val" if key in held_out else "train"
        if split == "train":
            if allowance is None:
                available["documents"] += 1
                available["tokens"] += len(ids)
            else:
                ids = ids[:allowance.pop(key, 0)]  # pop: an exact duplicate text counts once
                if not ids:
                    continue
        packers[split].add(ids)
        docs[split] += 1
        chars += len(text)  # of the documents packed (a cut one counts whole)
    summary = _summary(writers, packers, docs)
    summary["train"].update(tokens_before_cap=available["tokens"], documents_before_cap=available["documents"])
    summary["chars_per_token"] = round(chars / max(1, sum(p.n_tokens for p in packers.values())), 4)
    return summary


def _summary(writers, packers, docs) -> dict:
    out = {}
    for s, p in packers.items():
        dropped = p.close()
        w = writers[s]
        out[s] = {"documents": docs[s], "tokens": p.n_tokens, "rows": w.n_rows, "shards": w.shards}
        if dropped is not None:
            out[s]["dropped_tail_tokens"] = dropped
        if isinstance(p, ExercisePacker):
            out[s].update(solution_tokens=p.n_solution, padding_tokens=p.n_pad, split_exercises=p.n_split)
        if w.n_rows == 0:
            raise Phi1Error(
                f"tokenize: the {s} split of {w.folder.name} has fewer than seq_len={w.seq_len} tokens "
                f"({p.n_tokens}); add data or lower tokenize.seq_len / raise tokenize.val_fraction"
            )
    return out


def tokenize_finetune(tokenizer, path: Path, out: Path, seq_len: int, val_fraction: float, shard_tokens: int) -> dict:
    """Encode and pack CodeExercises (prompt, solution) rows into `out`."""
    backend = tokenizer.backend_tokenizer
    eos = tokenizer.eos_token_id
    dtype = _dtype(model_vocab_size(tokenizer))
    keys = [doc_key(p + "\0" + s) for p, s in _exercises(path)]
    held_out = val_keys(keys, val_fraction)
    writers = {s: ShardWriter(out, s, seq_len, dtype, shard_tokens, with_mask=True) for s in ("train", "val")}
    packers = {s: ExercisePacker(w, eos) for s, w in writers.items()}
    docs = {"train": 0, "val": 0}
    for batch in _batches(tracked(_exercises(path), f"encode {path}", len(keys)), 512):
        prompts = backend.encode_batch([p for p, _ in batch], add_special_tokens=False)
        solutions = backend.encode_batch([s for _, s in batch], add_special_tokens=False)
        for (p, s), pe, se in zip(batch, prompts, solutions):
            split = "val" if doc_key(p + "\0" + s) in held_out else "train"
            packers[split].add(pe.ids, se.ids + [eos])
            docs[split] += 1
    return _summary(writers, packers, docs)


def _exercises(path: Path) -> Iterator[tuple[str, str]]:
    for f in shard_files(path):
        t = pq.read_table(f, columns=list(FINETUNE_COLUMNS))
        for p, s in zip(t.column("prompt").to_pylist(), t.column("solution").to_pylist()):
            if p and s:
                yield p, s


# --------------------------------------------------------------------------- stage


def parse_input(item: str) -> tuple[Path, str]:
    """`PATH[:COLUMN]` -> (path, column); the column defaults to `content` (a colon
    followed by a slash belongs to the path)."""
    path, sep, column = item.rpartition(":")
    return (Path(path), column) if sep and path and column and "/" not in column else (Path(item), "content")


def run(
    cfg: TokenizeConfig,
    pretrain_inputs: Sequence[tuple[str | Path, str] | str] | None,
    finetune_input: str | Path | None,
    tokenizer_out: str | Path,
    pretrain_out: str | Path,
    finetune_out: str | Path,
    metrics_path: str | Path,
) -> dict:
    """Build the tokenizer and both token folders; return the metrics written.

    `pretrain_inputs` (PATH:COLUMN strings or (path, column) pairs) overrides
    `cfg.pretrain_inputs`; None keeps them, and the config logged to MLflow shows the
    inputs used. `finetune_input=None` tokenizes pretraining data only (finetune_out is
    left alone)."""
    from phi1.tracking import numeric_metrics, stage_run, tracked_metrics

    t0 = time.time()
    if pretrain_inputs is not None:
        if not pretrain_inputs:
            raise Phi1Error("tokenize: no pretraining input given")
        items = tuple(i if isinstance(i, str) else f"{i[0]}:{i[1]}" for i in pretrain_inputs)
        cfg = dataclasses.replace(cfg, pretrain_inputs=items)
    inputs = [parse_input(i) for i in cfg.pretrain_inputs]
    for path, column in inputs:
        check_dataset(path, [column])
    ft_path = Path(finetune_input) if finetune_input is not None else None
    if ft_path is not None:
        check_dataset(ft_path, FINETUNE_COLUMNS)
    lineage = [str(p) for p, _ in inputs] + ([str(ft_path)] if ft_path else [])

    sources = lineage + ([cfg.tokenizer] if cfg.tokenizer != "bpe" else [])
    with stage_run("tokenize", cfg, inputs=lineage), outputs(sources) as staged:
        import mlflow

        check_output(metrics_path, sources, "file")  # before the work; staged at the end
        tok_dir = staged.dir(tokenizer_out)
        pre_dir = staged.dir(pretrain_out)
        ft_dir = staged.dir(finetune_out) if ft_path else None

        # One pass collects document keys (for the split) and feeds the BPE trainer.
        keys: list[bytes] = []

        def texts() -> Iterator[str]:
            n = 0
            for path, column in inputs:
                for text in iter_column(path, column):
                    keys.append(doc_key(text))
                    if cfg.tokenizer_max_docs is None or n < cfg.tokenizer_max_docs:
                        n += 1
                        yield text

        # texts() walks every document (collecting its key) even past tokenizer_max_docs.
        if cfg.tokenizer == "bpe":
            tokenizer = train_bpe(texts(), cfg.vocab_size, cfg.min_frequency)
        else:
            tokenizer = load_tokenizer(cfg.tokenizer)
            for _ in texts():
                pass
        if not keys:
            raise Phi1Error(f"tokenize: the pretraining inputs hold no text ({', '.join(lineage)})")
        tokenizer.model_max_length = cfg.seq_len
        tokenizer.save_pretrained(str(tok_dir))
        held_out = val_keys(keys, cfg.val_fraction)

        common = {
            "seq_len": cfg.seq_len, "vocab_size": model_vocab_size(tokenizer), "tokenizer_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id, "dtype": np.dtype(_dtype(model_vocab_size(tokenizer))).name,
        }
        pre = tokenize_pretrain(tokenizer, inputs, pre_dir, cfg.seq_len, cfg.val_fraction, cfg.shard_tokens, held_out,
                                cfg.max_tokens)
        write_json(pre_dir / META, {**common, "has_mask": False, "inputs": [f"{p}:{c}" for p, c in inputs],
                                    "splits": pre, "tokenizer": tokenizer_fingerprint(tokenizer)})
        metrics: dict = {**common, "pretrain": _split_metrics(pre)}
        metrics["pretrain"]["chars_per_token"] = pre["chars_per_token"]
        if ft_dir is not None:
            ft = tokenize_finetune(tokenizer, ft_path, ft_dir, cfg.seq_len, cfg.val_fraction, cfg.shard_tokens)
            write_json(ft_dir / META, {**common, "has_mask": True, "inputs": [str(ft_path)],
                                       "splits": ft, "tokenizer": tokenizer_fingerprint(tokenizer)})
            metrics["finetune"] = _split_metrics(ft)
        metrics["seconds"] = round(time.time() - t0, 2)
        staged.json(metrics_path, tracked_metrics(metrics))  # without timings: those go to MLflow
        staged.commit()  # tokenizer, both token sets and the metrics, together
        mlflow.log_metrics(numeric_metrics(metrics))
    return metrics


def _split_metrics(summary: dict) -> dict:
    out = {}
    for split in ("train", "val"):
        s = summary[split]
        out.update({f"{split}_{k}": v for k, v in s.items() if k != "shards"})
    return out



__all__ = ["run", "parse_input", "train_bpe", "model_vocab_size", "EOS"]
