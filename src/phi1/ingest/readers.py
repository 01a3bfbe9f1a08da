"""datatrove readers, one per source kind, that all yield the same kind of Document.

    reader = LocalFileReader("stdlib", 0, [("os.py", "/usr/lib/python3.11/os.py")], max_bytes=1_000_000,
                             root="/usr/lib/python3.11")
    for doc in reader.run(None, rank=0, world_size=1): ...

(pipeline.build_pipeline makes one per source from params.)

Every document carries in `metadata`: `source` (the source's name), `source_index`
(its position in params, the first sort key of the global dedup), `path` (relative to
the source root, or the export's path/row) and `key` (a tie-breaker when two rows share
a path). A document that could not be read still flows on, marked `unreadable` (with a
reason), so the filters count it instead of it vanishing: datatrove's own readers skip
empty or malformed rows with a log line, which would lose them from the metrics. A file
whose real path leaves its source's root is never opened: it flows on as one document
marked `symlink_outside_root` (see phi1.ingest.sources.confine).

The disk readers take their file list from `sources.list_files` as (shown name,
absolute path) pairs, not through datatrove's `paths_file`: that file is split on
newlines and each line stripped, so a file name holding a newline or edge whitespace
would come back as fragments. File names in `path` and in messages are
`sources.display_name`s (valid UTF-8, one line).

Files of a `site-packages` source (LocalFileReader with `owners`) also carry
`distribution`, `version` and `licence` (phi1.ingest.sources.Owner), which LicenceFilter
reads.

Local files arrive as raw bytes (`metadata["raw"]`), decoded later by DecodeFilter;
exports arrive as text (or bytes, when a parquet column is binary).

An export (jsonl, parquet, hf, stackoverflow) with a `limit` is read by task 0 alone, so
`limit` means the same documents for any number of tasks (datatrove's own `limit` is
per task). A local source's limit is applied to its sorted file list before reading.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from typing import Any, BinaryIO, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader, BaseReader
from datatrove.pipeline.readers.huggingface import HuggingFaceDatasetReader
from datatrove.pipeline.readers.jsonl import JsonlReader
from datatrove.pipeline.readers.parquet import ParquetReader
from tqdm import tqdm

from phi1.errors import Phi1Error
from phi1.ingest import stackoverflow
from phi1.ingest.sources import UNOWNED, Owner, Refused, display_name, open_confined, read_limited


def make_document(source: str, index: int, path: str, key: str, text: str = "", **meta: Any) -> Document:
    metadata = {"source": source, "source_index": index, "path": path, "key": key, **meta}
    return Document(text=text, id=f"{source}/{key}", metadata=metadata)


def _text_or_raw(value: Any) -> dict[str, Any]:
    """Export cell -> Document fields: text as is, bytes for DecodeFilter, None as empty."""
    if value is None:
        return {"text": ""}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, (bytes, bytearray)):
        return {"text": "", "raw": bytes(value), "size": len(value)}
    return {"text": "", "unreadable": f"content is {type(value).__name__}, not text"}


class _SourceMixin:
    """The source's identity plus the one-task rule for limited sources."""

    source: str
    source_index: int
    source_limit: int | None

    def _init_source(self, source: str, index: int, limit: int | None) -> None:
        self.source, self.source_index, self.source_limit = source, index, limit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        if self.source_limit is not None:
            if rank != 0:
                return
            rank, world_size = 0, 1
        docs = self._documents(rank, world_size)
        if self.source_limit is not None:
            docs = itertools.islice(docs, self.source_limit)
        yield from docs

    def _documents(self, rank: int, world_size: int) -> DocumentsPipeline:
        """This task's documents: the datatrove reader's."""
        return super().run(None, rank, world_size)  # type: ignore[misc]

    def doc(self, path: str, key: str, **fields: Any) -> Document:
        self.stat_update("documents")  # type: ignore[attr-defined]
        return make_document(self.source, self.source_index, path, key, **fields)


class _DiskSourceMixin(_SourceMixin):
    """A disk source's listed files, (shown name, absolute path), each confined to `root`:
    task r reads files r, r+N, r+2N... (all of them on task 0 when the source has a limit)."""

    files: list[tuple[str, str]]
    root: str

    def __init__(self, source: str, index: int, limit: int | None, root: str, files: list[tuple[str, str]],
                 content_column: str, path_column: str | None):
        super().__init__(root, text_key=content_column)  # the datatrove reader's (next in the MRO)
        self._init_source(source, index, limit)
        self.root, self.files = root, files
        self.path_column = path_column

    def _documents(self, rank: int, world_size: int) -> DocumentsPipeline:
        """This task's share of the files, read here (datatrove's reader lists its own)."""
        for doc in self._read_shard(self.files[rank::world_size]):
            self.update_doc_stats(doc)  # type: ignore[attr-defined]
            yield doc

    def _read_shard(self, shard: list[tuple[str, str]]) -> DocumentsPipeline:
        for name, path in shard:
            self.stat_update("input_files")  # type: ignore[attr-defined]
            try:
                fh = open_confined(path, self.root)
            except Refused as r:  # outside the root, a FIFO, a folder named x.jsonl, a broken link
                yield self.doc(name, name, **{r.reason: r.detail})
                continue
            with fh:
                yield from self.read_stream(fh, name)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        """datatrove's entry point for one file (relative to the root); `run` does not use it."""
        yield from self._read_shard([(display_name(filepath), os.path.join(self.root, filepath))])

    def read_stream(self, fh: BinaryIO, name: str) -> Iterator[Document]:
        """The documents of one opened file, `name` being its shown name."""
        raise NotImplementedError


class LocalFileReader(BaseReader):
    """Read listed files (from `sources.list_files`), each confined to `root`; task r
    takes files r, r+N, r+2N..."""

    name = "phi1 local files"

    def __init__(self, source: str, index: int, entries: list[tuple[str, str]], max_bytes: int, root: str,
                 owners: dict[str, Owner] | None = None):
        super().__init__()
        self.source, self.source_index = source, index
        self.entries = entries
        self.max_bytes = max_bytes
        self.root = root
        self.owners = owners  # site-packages: each file's distribution, version, licence

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        shard = self.entries[rank::world_size]
        bar = tqdm(shard, desc=f"ingest {self.source} [task {rank}]", unit="file", file=sys.stderr,
                   disable=None, position=rank, leave=False, mininterval=0.5)
        for rel, path in bar:
            res = read_limited(path, self.max_bytes, root=self.root)
            fields: dict[str, Any] = {"size": res.size}
            if self.owners is not None:
                fields |= self.owners.get(rel, UNOWNED).fields()
            if res.problem in ("unreadable", "symlink_outside_root"):  # the filters count these by key
                fields[res.problem] = res.detail or res.problem
            elif res.data is not None:
                fields["raw"] = res.data
            self.stat_update("documents")
            yield make_document(self.source, self.source_index, rel, rel, **fields)


class SourceJsonlReader(_DiskSourceMixin, JsonlReader):
    """JSON lines with a content column; a malformed line is an `unreadable` document."""

    name = "phi1 jsonl"

    def read_stream(self, fh: BinaryIO, name: str) -> Iterator[Document]:
        import orjson
        from fsspec.compression import compr
        from fsspec.utils import infer_compression

        codec = infer_compression(name) if self.compression == "infer" else self.compression
        try:
            with compr[codec](fh, mode="rb") if codec else fh as f:
                for li, line in enumerate(f):
                    if not line.strip():
                        continue
                    key = f"{name}:{li + 1:012d}"
                    default_path = f"{name}:{li + 1}"
                    try:
                        row = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield self.doc(default_path, key, unreadable=f"line {li + 1}: not JSON ({exc})")
                        continue
                    if not isinstance(row, dict) or self.text_key not in row:
                        yield self.doc(default_path, key, unreadable=f"line {li + 1}: no {self.text_key!r} field")
                        continue
                    path = _row_path(row, self.path_column) or default_path
                    yield self.doc(path, key, **_text_or_raw(row[self.text_key]))
        except (OSError, EOFError) as exc:  # corrupt gzip/zstd: the whole file is bad input
            raise Phi1Error(f"ingest source {self.source!r}: cannot read {name}: {exc}") from None


class SourceParquetReader(_DiskSourceMixin, ParquetReader):
    """Parquet files with a content column (an export of The Stack looks like this)."""

    name = "phi1 parquet"

    def read_stream(self, fh: BinaryIO, name: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(fh)
        except Exception as exc:  # ArrowInvalid: not parquet
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Phi1Error(f"ingest source {self.source!r}: {name} is not a parquet file ({msg})") from None
        names = pf.schema_arrow.names
        if self.text_key not in names:
            raise Phi1Error(
                f"ingest source {self.source!r}: {name} has no column {self.text_key!r} "
                f"(content_column; columns: {', '.join(names)})"
            )
        cols = [self.text_key] + ([self.path_column] if self.path_column in names else [])
        row_no = 0
        for batch in pf.iter_batches(batch_size=self.batch_size, columns=cols):
            for row in batch.to_pylist():
                key = f"{name}:{row_no:012d}"
                path = _row_path(row, self.path_column) or f"{name}:{row_no}"
                row_no += 1
                yield self.doc(path, key, **_text_or_raw(row[self.text_key]))


class SourceHFReader(_SourceMixin, HuggingFaceDatasetReader):
    """A Hugging Face dataset (hub id or local dataset folder) through datasets.load_dataset.

    Rows without a path column get `row-<sha1 of content>` as path, which does not depend
    on how the dataset is sharded across tasks."""

    name = "phi1 hf dataset"

    def __init__(self, source: str, index: int, limit: int | None, dataset: str, data_dir: str | None,
                 split: str, streaming: bool, content_column: str, path_column: str | None):
        options = {"split": split} | ({"data_dir": data_dir} if data_dir else {})
        HuggingFaceDatasetReader.__init__(self, dataset, dataset_options=options, streaming=streaming,
                                          text_key=content_column)
        self._init_source(source, index, limit)
        self.path_column = path_column

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        try:
            yield from super().run(data, rank, world_size)
        except Phi1Error:
            raise
        except (OSError, ValueError, ImportError) as exc:  # datasets' not-found / offline errors
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Phi1Error(f"ingest source {self.source!r}: cannot load dataset {self.dataset!r}: {msg}") from None

    def get_document_from_dict(self, data: dict, source_file: str, id_in_file: int | str):
        if self.text_key not in data:
            raise Phi1Error(
                f"ingest source {self.source!r}: dataset {self.dataset!r} has no column {self.text_key!r} "
                f"(content_column; columns: {', '.join(data)})"
            )
        fields = _text_or_raw(data[self.text_key])
        path = _row_path(data, self.path_column)
        if not path:
            digest = hashlib.sha1(repr(data[self.text_key]).encode("utf-8", "surrogatepass")).hexdigest()[:16]
            path = f"row-{digest}"
        return self.doc(path, path, **fields)


class StackOverflowReader(_DiskSourceMixin, BaseDiskReader):
    """Answers with code from Posts.xml dumps or parquet exports (see phi1.ingest.stackoverflow)."""

    name = "phi1 stackoverflow"

    def __init__(self, source: str, index: int, limit: int | None, root: str, files: list[tuple[str, str]],
                 tags: tuple[str, ...] = ()):
        BaseDiskReader.__init__(self, root)
        self._init_source(source, index, limit)
        self.root, self.files = root, files
        self.tags = tags

    def read_stream(self, fh: BinaryIO, name: str) -> Iterator[Document]:
        for post_id, code in stackoverflow.iter_answers(name, self.tags, fh=fh):
            yield self.doc(f"{name}:{post_id}", f"{name}:{post_id:>012}", text=code)


def _row_path(row: dict, column: str | None) -> str | None:
    if not column:
        return None
    value = row.get(column)
    return str(value) if value not in (None, "") else None
