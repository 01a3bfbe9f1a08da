"""Where a source's files are, and how one file is read safely.

    root, entries = list_files(source_cfg, suffixes=(".py",))
    result = read_limited("/path/x.py", max_bytes=1_000_000)

Listing happens once, in the parent process, so every datatrove task sees the same
sorted list (that is what makes `tasks=2` produce what `tasks=1` does). Reading never
blocks and never reads past `max_bytes`: special files (FIFOs, sockets, devices,
directories named `x.py`), dangling symlinks and symlink loops are reported as
`unreadable` without being opened for a blocking read.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from phi1.errors import Phi1Error

STDLIB_PLACEHOLDER = "{stdlib}"
_MAGIC = set("*?[")


def stdlib_dir() -> str:
    """The running interpreter's standard library folder (what `{stdlib}` expands to)."""
    return sysconfig.get_paths()["stdlib"]


def expand(path: str) -> str:
    """`{stdlib}` and `~` expanded, made absolute."""
    return os.path.abspath(os.path.expanduser(path.replace(STDLIB_PLACEHOLDER, stdlib_dir())))


@dataclass(frozen=True)
class Entry:
    """One listed file: `rel` (posix, relative to the source root) and its absolute path."""

    rel: str
    abs: str


def _has_magic(p: str) -> bool:
    return any(c in _MAGIC for c in p)


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (the root of what it matches)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _has_magic(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else os.sep


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _walk(top: str, suffixes: tuple[str, ...]) -> list[str]:
    """Every name under `top` ending in a suffix, of any file type. A directory named
    `x.py` is listed too (it is counted `unreadable`) and still walked. Symlinked
    folders are not followed, so a symlink loop cannot make the walk endless."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in filenames + dirnames:
            if name.endswith(suffixes):
                found.append(os.path.join(dirpath, name))
    return found


def list_files(
    name: str, paths: tuple[str, ...], exclude: tuple[str, ...] = (), suffixes: tuple[str, ...] = (".py",)
) -> tuple[str, list[Entry]]:
    """(root, entries sorted by relative path) for a source's `paths` (dirs, files, globs).

    The root is the common folder of all the paths, so relative paths stay unique when a
    source lists several folders. A path that does not exist, or a glob that matches
    nothing, is a one-line Phi1Error naming it."""
    candidates: list[str] = []
    roots: list[str] = []
    for raw in paths:
        p = expand(raw)
        if _has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise Phi1Error(f"ingest source {name!r}: no files match {raw!r} ({p})")
            roots.append(_static_prefix(p))
            for m in matches:
                if os.path.isdir(m) and not os.path.islink(m) and not m.endswith(suffixes):
                    candidates.extend(_walk(m, suffixes))
                elif m.endswith(suffixes):
                    candidates.append(m)
        elif os.path.isdir(p):
            roots.append(p)
            candidates.extend(_walk(p, suffixes))
        elif os.path.lexists(p):
            roots.append(os.path.dirname(p))
            candidates.append(p)
        else:
            raise Phi1Error(f"ingest source {name!r}: path not found: {raw!r} ({p})")
    root = os.path.commonpath(roots) if roots else os.sep
    seen: dict[str, Entry] = {}
    for c in candidates:
        rel = Path(os.path.relpath(c, root)).as_posix()
        if rel in seen or _excluded(rel, exclude):
            continue
        seen[rel] = Entry(rel, c)
    return root, [seen[k] for k in sorted(seen)]


@dataclass
class ReadResult:
    """What reading one file gave: bytes, or the reason it could not be used."""

    data: Optional[bytes]
    size: int
    problem: Optional[str] = None  # "unreadable" | "oversized"
    detail: str = ""


def read_limited(path: str, max_bytes: int) -> ReadResult:
    """Read at most `max_bytes + 1` bytes of a regular file (one more tells us it is too big).

    A file whose size already exceeds `max_bytes` is not read at all. Non-regular files
    are refused on `stat`, before any open; the open is also non-blocking and re-checked
    with `fstat`, so a FIFO swapped in between cannot hang the reader."""
    try:
        st = os.stat(path)
    except OSError as exc:  # dangling symlink, symlink loop, permission
        return ReadResult(None, 0, "unreadable", exc.strerror or str(exc))
    if not stat.S_ISREG(st.st_mode):
        return ReadResult(None, 0, "unreadable", "not a regular file")
    if st.st_size > max_bytes:
        return ReadResult(None, st.st_size, "oversized")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return ReadResult(None, 0, "unreadable", exc.strerror or str(exc))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ReadResult(None, 0, "unreadable", "not a regular file")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:  # EIO, EISDIR on odd filesystems
        return ReadResult(None, 0, "unreadable", exc.strerror or str(exc))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # grew after stat, or stat lied (procfs-like files)
        return ReadResult(None, len(data), "oversized")
    return ReadResult(data, len(data))
