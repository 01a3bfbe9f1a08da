"""Listing sources and reading files without blocking or reading too much."""

from __future__ import annotations

import glob
import os

import pytest

from phi1.errors import Phi1Error
from phi1.ingest.sources import (
    Refused,
    _glob,
    display_name,
    list_files,
    open_confined,
    read_limited,
    stdlib_dir,
    unescape_name,
)


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


@pytest.mark.parametrize("name", [
    b"plain/os.py", b"caf\xe9.py", b"new\nline.py", b"tab\there.py", b"esc\x1b[0m.py", b"-dash.py",
    "ünïcødé_模块.py".encode(), b"back\\slash\\x41.py", "sep\u2028\u0085\x7f.py".encode(), b"\xff\xfe\\u1234.py",
])
def test_display_name_is_one_line_of_utf8_and_lossless(name):
    shown = display_name(os.fsdecode(name))
    shown.encode("utf-8")  # no surrogates: parquet can store it
    assert shown.splitlines() == [shown]
    assert os.fsencode(unescape_name(shown)) == name
    if name.isascii() and name.decode().isprintable() and b"\\" not in name:
        assert shown == name.decode()  # ordinary names (all the stdlib's) are unchanged


def test_glob_lists_what_glob_does_but_never_enters_a_symlinked_folder(small_corpus, tmp_path):
    (small_corpus / ".hidden").mkdir()
    (small_corpus / ".hidden" / "h.py").write_text("x = 1\n")
    (small_corpus / "json" / ".dot.py").write_text("x = 1\n")
    for pattern in ("**/*.py", "*.py", "*/*.py", "json/*.py", "**/.*.py", "**/.hidden/*.py", "**", "[bc]*.py"):
        p = str(small_corpus / pattern)
        assert {x.rstrip("/") for x in glob.glob(p, recursive=True)} == set(_glob(p)), pattern

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "far.py").write_text("x = 1\n")
    os.symlink(outside, small_corpus / "link")
    os.symlink("/", small_corpus / "slash")  # glob's ** would walk the whole filesystem through this
    root, entries = list_files("c", (str(small_corpus / "**" / "*.py"),))
    assert not [e.rel for e in entries if e.rel.startswith(("link/", "slash/"))]


def test_reads_are_confined_to_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.mkfifo(outside / "fifo.py")  # no writer: a blocking open would hang this test
    (outside / "secret.py").write_text("SECRET = 1\n")
    (root / "lib").mkdir()
    (root / "lib" / "real.txt").write_text("x = 1\n")
    os.symlink("lib/real.txt", root / "inside.py")
    os.symlink(outside / "fifo.py", root / "fifo.py")
    os.symlink("../outside/secret.py", root / "secret.py")
    os.symlink(outside / "missing.py", root / "gone_outside.py")
    os.symlink("missing.py", root / "gone.py")
    os.symlink("../root/inside.py", outside / "back.py")
    os.symlink(outside / "back.py", root / "round_trip.py")  # leaves, then comes back: its real path is inside

    got = {n: read_limited(str(root / n), 1000, root=str(root)) for n in os.listdir(root) if n.endswith(".py")}
    assert got["inside.py"].data == got["round_trip.py"].data == b"x = 1\n"
    for n in ("fifo.py", "secret.py", "gone_outside.py"):
        assert got[n].problem == "symlink_outside_root" and got[n].data is None, n
        assert got[n].detail.startswith(f"resolves to {outside}"), got[n].detail
    assert (got["gone.py"].problem, got["gone.py"].detail) == ("unreadable", "No such file or directory")

    with pytest.raises(Refused) as exc:
        open_confined(str(root / "fifo.py"), str(root))
    assert exc.value.reason == "symlink_outside_root"
    with open_confined(str(root / "inside.py"), str(root)) as fh:
        assert fh.read() == b"x = 1\n"
    # a root that is itself reached through a symlink: its real path is what counts
    os.symlink(root, tmp_path / "alias")
    assert read_limited(str(tmp_path / "alias" / "inside.py"), 1000, root=str(tmp_path / "alias")).data == b"x = 1\n"
