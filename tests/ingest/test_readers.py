"""Each source kind read through its datatrove reader into the same kind of Document."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phi1.errors import Phi1Error
from phi1.ingest.readers import (
    LocalFileReader,
    SourceHFReader,
    SourceJsonlReader,
    SourceParquetReader,
    StackOverflowReader,
)
from phi1.ingest.sources import list_files

from .conftest import GOOD
from .test_stackoverflow import CODE, write_posts_xml


def _docs(reader, rank=0, world_size=1):
    return list(reader.run(None, rank, world_size))


def _jsonl_source(tmp_path):
    src = tmp_path / "export"
    src.mkdir()
    rows = [{"content": GOOD, "max_stars_repo_path": "pkg/a.py"}, {"content": "", "max_stars_repo_path": "pkg/e.py"}]
    lines = [json.dumps(r) for r in rows] + ["{not json", json.dumps({"text": "no content column"}), ""]
    (src / "a.jsonl").write_text("\n".join(lines) + "\n")
    with gzip.open(src / "b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"content": "x = 1\n"}) + "\n")
    return src


def _reader(cls, tmp_path, src, suffixes, *args, limit=None, **kw):
    root, entries = list_files("exp", (str(src),), suffixes=suffixes)
    return cls("exp", 1, limit, root, [(e.rel, e.abs) for e in entries], *args, **kw)


def test_local_reader_reads_bytes_and_marks_unreadable(bad_source):
    root, entries = list_files("bad", (str(bad_source),))
    reader = LocalFileReader("bad", 0, [(e.rel, e.abs) for e in entries], max_bytes=1_000_000, root=root)
    docs = {d.metadata["path"]: d for d in _docs(reader)}
    assert docs["a_original.py"].metadata["raw"] == GOOD.encode()
    assert docs["a_original.py"].metadata["source"] == "bad"
    assert docs["fifo.py"].metadata["unreadable"] == "not a regular file"
    assert "raw" not in docs["big.py"].metadata and docs["big.py"].metadata["size"] == 50_000_000
    # tasks split the list: r, r+N, ...; together they cover it exactly once
    halves = [d.metadata["path"] for r in (0, 1) for d in _docs(reader, r, 2)]
    assert sorted(halves) == sorted(docs)


def test_jsonl_rows_malformed_lines_and_gzip(tmp_path):
    src = _jsonl_source(tmp_path)
    reader = _reader(SourceJsonlReader, tmp_path, src, (".jsonl", ".jsonl.gz"), "content", "max_stars_repo_path")
    docs = _docs(reader)
    got = [(d.metadata["path"], d.text, d.metadata.get("unreadable", "")[:20]) for d in docs]
    assert got == [
        ("pkg/a.py", GOOD, ""),
        ("pkg/e.py", "", ""),  # empty content flows on, to be counted too_short
        ("a.jsonl:3", "", "line 3: not JSON (un"),
        ("a.jsonl:4", "", "line 4: no 'content'"),
        ("b.jsonl.gz:1", "x = 1\n", ""),
    ]
    assert all(d.metadata["source_index"] == 1 for d in docs)


def test_limited_source_is_read_by_task_zero_only(tmp_path):
    src = _jsonl_source(tmp_path)
    reader = _reader(SourceJsonlReader, tmp_path, src, (".jsonl", ".jsonl.gz"), "content", None, limit=2)
    assert [d.metadata["path"] for d in _docs(reader, 0, 2)] == ["a.jsonl:1", "a.jsonl:2"]
    assert _docs(reader, 1, 2) == []


def test_parquet_content_and_path_columns(tmp_path):
    src = tmp_path / "pq"
    src.mkdir()
    pq.write_table(pa.table({"content": [GOOD, None], "path": ["x/a.py", None]}), src / "part-0.parquet")
    pq.write_table(pa.table({"content": [b"\xef\xbb\xbfx = 1\n"]}), src / "part-1.parquet")  # a binary column
    reader = _reader(SourceParquetReader, tmp_path, src, (".parquet",), "content", "path")
    docs = _docs(reader)
    assert [(d.metadata["path"], d.text) for d in docs] == [
        ("x/a.py", GOOD), ("part-0.parquet:1", ""), ("part-1.parquet:0", "")
    ]
    assert docs[2].metadata["raw"] == b"\xef\xbb\xbfx = 1\n"  # decoded later, BOM and all

    pq.write_table(pa.table({"text": ["x"]}), src / "part-2.parquet")
    reader = _reader(SourceParquetReader, tmp_path, src, (".parquet",), "content", "path")
    with pytest.raises(Phi1Error, match=r"part-2.parquet has no column 'content' \(content_column; columns: text\)"):
        _docs(reader)


def _hf_folder(tmp_path):
    """A local dataset folder laid out like bigcode/the-stack-dedup (data/python/...)."""
    root = tmp_path / "the-stack"
    (root / "data" / "python").mkdir(parents=True)
    rows = [{"content": GOOD, "max_stars_repo_path": "repo/bisect.py"},
            {"content": "print(1)\n", "max_stars_repo_path": None}]
    (root / "data" / "python" / "train-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "data" / "other").mkdir()
    (root / "data" / "other" / "train-00000.jsonl").write_text(json.dumps({"content": "not python"}) + "\n")
    return root


@pytest.mark.parametrize("streaming", [True, False])
def test_hf_dataset_through_datatrove_reader(tmp_path, streaming, monkeypatch):
    import datasets

    # non-streaming builds an arrow cache: keep it in the test's folder (read at call time)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    root = _hf_folder(tmp_path)
    reader = SourceHFReader("stack", 0, None, str(root), "data/python", "train", streaming, "content",
                            "max_stars_repo_path")
    docs = _docs(reader)
    assert [d.text for d in docs] == [GOOD, "print(1)\n"]
    assert docs[0].metadata["path"] == "repo/bisect.py"
    assert docs[1].metadata["path"].startswith("row-")  # no path: named by its content, same for any tasks


def test_hf_missing_dataset_is_a_one_line_error(tmp_path):
    reader = SourceHFReader("stack", 0, None, str(tmp_path / "nope"), None, "train", True, "content", None)
    with pytest.raises(Phi1Error, match="ingest source 'stack': cannot load dataset") as exc:
        _docs(reader)
    assert "\n" not in str(exc.value)


def test_stackoverflow_reader(tmp_path):
    src = tmp_path / "so"
    src.mkdir()
    write_posts_xml(src / "Posts.xml")
    reader = _reader(StackOverflowReader, tmp_path, src, (".xml",), tags=("python",))
    (doc,) = _docs(reader)
    assert doc.metadata["path"] == "Posts.xml:2"
    assert doc.text.startswith(CODE)


def test_disk_readers_take_whole_names_and_refuse_without_opening(tmp_path):
    # datatrove's paths_file would split "new\nline.jsonl" into two names and strip " edge .jsonl"
    src, outside = tmp_path / "export", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    for name in ("new\nline.jsonl", " edge .jsonl"):
        (src / name).write_text(json.dumps({"content": "x = 1\n"}) + "\n")
    os.mkfifo(outside / "fifo.jsonl")  # no writer: opening it would hang the reader
    os.symlink(outside / "fifo.jsonl", src / "out.jsonl")
    os.mkfifo(src / "here.jsonl")
    reader = _reader(SourceJsonlReader, tmp_path, src, (".jsonl",), "content", None)
    got = {d.metadata["path"]: (d.text, d.metadata.get("unreadable"), d.metadata.get("symlink_outside_root"))
           for d in _docs(reader)}
    assert got == {
        " edge .jsonl:1": ("x = 1\n", None, None),
        "here.jsonl": ("", "not a regular file", None),
        "new\\x0aline.jsonl:1": ("x = 1\n", None, None),
        "out.jsonl": ("", None, f"resolves to {outside}/fifo.jsonl, outside {src}"),
    }
