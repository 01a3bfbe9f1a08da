"""Listing sources and reading files without blocking or reading too much."""

from __future__ import annotations

import os

import pytest

from phi1.errors import Phi1Error
from phi1.ingest.sources import list_files, read_limited, stdlib_dir


def _rels(entries):
    return [e.rel for e in entries]


def test_directory_is_walked_sorted_with_special_entries_listed(bad_source):
    root, entries = list_files("bad", (str(bad_source),))
    assert root == str(bad_source)
    rels = _rels(entries)
    assert rels == sorted(rels)
    # a directory named dir.py, a FIFO, broken and looping links are listed (then counted unreadable)
    assert {"dir.py", "fifo.py", "dangling.py", "loop.py"} <= set(rels)
    assert "notes.txt" not in rels
    assert not [r for r in rels if r.startswith("sub/")]  # the folder symlink loop is not followed


def test_glob_exclude_and_several_roots(small_corpus, tmp_path):
    root, entries = list_files("c", (str(small_corpus / "**" / "*.py"),), exclude=("json/**",))
    assert root == str(small_corpus)
    assert "email/quoprimime.py" in _rels(entries)
    assert not [r for r in _rels(entries) if r.startswith("json/")]

    other = tmp_path / "other"
    other.mkdir()
    (other / "bisect.py").write_text("x = 1\n")
    root, entries = list_files("c", (str(small_corpus), str(other)))
    assert root == str(tmp_path)  # the common folder keeps relative paths unique
    assert {"corpus/bisect.py", "other/bisect.py"} <= set(_rels(entries))

    root, entries = list_files("c", (str(small_corpus / "heapq.py"),))
    assert (root, _rels(entries)) == (str(small_corpus), ["heapq.py"])


def test_stdlib_placeholder_expands_to_the_running_interpreter(tmp_path):
    root, entries = list_files("std", ("{stdlib}/json",))
    assert root == os.path.join(stdlib_dir(), "json")
    assert "decoder.py" in _rels(entries)


@pytest.mark.parametrize("path", ["/no/such/dir", "/no/such/*.py"])
def test_missing_path_or_empty_glob_is_a_one_line_error(path):
    with pytest.raises(Phi1Error, match=r"ingest source 'x': (path not found|no files match)") as exc:
        list_files("x", (path,))
    assert path in str(exc.value) and "\n" not in str(exc.value)


def _rchar() -> int:
    """Bytes this process has read through read(2) so far (Linux /proc accounting)."""
    for line in open("/proc/self/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_read_never_blocks_and_never_reads_past_max_bytes(bad_source):
    before = _rchar()
    big = read_limited(str(bad_source / "big.py"), max_bytes=1_000_000)
    assert (big.problem, big.size, big.data) == ("oversized", 50_000_000, None)
    assert _rchar() - before < 100_000  # the 50 MB file was not read

    for name in ("fifo.py", "dir.py", "dangling.py", "loop.py"):
        res = read_limited(str(bad_source / name), max_bytes=1_000_000)
        assert res.problem == "unreadable" and res.data is None, name
    assert "symbolic links" in read_limited(str(bad_source / "loop.py"), 10).detail

    ok = read_limited(str(bad_source / "a_original.py"), max_bytes=1_000_000)
    assert ok.problem is None and ok.data == (bad_source / "a_original.py").read_bytes()
    assert read_limited(str(bad_source / "a_original.py"), max_bytes=100).problem == "oversized"
    assert read_limited(str(bad_source / "empty.py"), max_bytes=100).data == b""
