"""Where a source's files are, and how one file is read safely.

    root, entries = list_files(source_cfg, suffixes=(".py",))
    result = read_limited("/path/x.py", max_bytes=1_000_000)

Listing happens once, in the parent process, so every datatrove task sees the same
sorted list (that is what makes `tasks=2` produce what `tasks=1` does). Reading never
blocks and never reads past `max_bytes`: special files (FIFOs, sockets, devices,
directories named `x.py`), dangling symlinks and symlink loops are reported as
`unreadable` without being opened for a blocking read.

Reads are confined to the source's root: right before a file is opened its real path
(os.path.realpath) is checked to lie under the root's real path; one that leaves it (a
symlink to /etc/shadow, a symlinked folder pointing elsewhere) is refused as
`symlink_outside_root` and never opened or stat'ed beyond what realpath itself does
(lstat of each component). What is opened is that real path, with O_NOFOLLOW, so the
file read is the file checked. Symlinks that stay inside the root are read as before.
Not covered: hard links and bind mounts (they are not symlinks: the kernel gives no way
to tell them from the file itself), and a tree that an attacker changes while the
ingest runs (a folder on the real path swapped for a symlink between check and open).

File names are stored as `display_name` gives them: valid UTF-8 on one line, lossless
(undecodable bytes as `\\xNN`, control characters and line separators escaped too).

An installed Python environment (source kind `site-packages`) is listed by
`site_packages`: its site-packages folders' .py files, each with the distribution that
installed it (the dist's RECORD, through importlib.metadata), its version and its
declared licence (phi1.ingest.licences); a file no distribution lists is `UNOWNED`.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import stat
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

from phi1.errors import Phi1Error
from phi1.ingest.licences import UNKNOWN, declared_licence

STDLIB_PLACEHOLDER = "{stdlib}"
_MAGIC = set("*?[")


def stdlib_dir() -> str:
    """The running interpreter's standard library folder (what `{stdlib}` expands to)."""
    return sysconfig.get_paths()["stdlib"]


def expand(path: str) -> str:
    """`{stdlib}` and `~` expanded, made absolute."""
    return os.path.abspath(os.path.expanduser(path.replace(STDLIB_PLACEHOLDER, stdlib_dir())))


# Characters a stored name must not carry as is: the backslash (the escape character),
# C0/C1 controls (newline, tab, ESC...), line/paragraph separators (str.splitlines
# breaks on them), and surrogates (os.fsdecode's stand-ins for undecodable bytes;
# parquet and UTF-8 refuse them).
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:\\|x([0-9a-f]{2})|u([0-9a-f]{4}))")


def _escape_char(m: re.Match) -> str:
    c = ord(m.group())
    if c == 0x5C:
        return "\\\\"
    if c < 0x80:
        return f"\\x{c:02x}"
    if 0xDC80 <= c <= 0xDCFF:  # os.fsdecode's surrogateescape: the undecodable byte itself
        return f"\\x{c - 0xDC00:02x}"
    return f"\\u{c:04x}"


def display_name(name: str) -> str:
    """A file name as it is stored (data/raw `path`, manifest) and shown in messages:
    valid UTF-8, one line, and lossless (`unescape_name` gives the name back).

    An undecodable byte (a surrogate from os.fsdecode) becomes `\\xNN` (NN >= 80), an
    ASCII control character `\\xNN` (NN < 80), a C1 control, line separator or other
    surrogate `\\uNNNN`, a backslash `\\\\`; everything else (unicode included) is
    kept. Names without such characters (all of the stdlib's) are unchanged."""
    return _UNSAFE.sub(_escape_char, name)


def unescape_name(shown: str) -> str:
    """The inverse of `display_name` (os.fsencode of it gives the name's bytes back)."""
    def one(m: re.Match) -> str:
        if m.group(1):
            b = int(m.group(1), 16)
            return chr(b) if b < 0x80 else chr(0xDC00 + b)
        if m.group(2):
            return chr(int(m.group(2), 16))
        return "\\"

    return _ESCAPE.sub(one, shown)


@dataclass(frozen=True)
class Entry:
    """One listed file: `rel` (posix, relative to the source root, as `display_name`
    shows it) and `abs`, its absolute path as the filesystem names it."""

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


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _match(parts: tuple[str, ...], pats: tuple[str, ...], whole: bool = True) -> bool:
    """Does the path `parts` match the glob segments `pats` as glob.glob(recursive=True)
    would (`**` is zero or more folders; wildcards skip hidden names unless the segment
    starts with a dot)? With `whole=False`: could a path below folder `parts` match?"""
    if not parts:
        return not whole or all(p == "**" for p in pats)
    if not pats:
        return False
    p, name = pats[0], parts[0]
    if p == "**":
        return _match(parts, pats[1:], whole) or (not _hidden(name) and _match(parts[1:], pats, whole))
    if _has_magic(p):
        ok = fnmatch.fnmatchcase(name, p) and (not _hidden(name) or _hidden(p))
    else:
        ok = name == p
    return ok and _match(parts[1:], pats[1:], whole)


def _glob(pattern: str) -> list[str]:
    """glob.glob(pattern, recursive=True), except that symlinked folders are never
    entered: glob's `**` follows them, which would list (and, through a link to /, walk)
    folders outside the source's root."""
    prefix = _static_prefix(pattern)
    pats = Path(pattern).parts[len(Path(prefix).parts):]
    found = [prefix] if _match((), pats) else []
    for dirpath, dirnames, filenames in os.walk(prefix, followlinks=False):
        base = Path(dirpath).relative_to(prefix).parts
        for n in filenames + dirnames:
            if _match((*base, n), pats):
                found.append(os.path.join(dirpath, n))
        dirnames[:] = [d for d in dirnames if _match((*base, d), pats, whole=False)]
    return found


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
    source lists several folders; it is also what reads are confined to (`confine`).
    Symlinked folders are never entered, by a walk or by a glob's `**`. `exclude`
    patterns match the name as on disk. A path that does not exist, or a glob that
    matches nothing, is a one-line Phi1Error naming it."""
    candidates: list[str] = []
    roots: list[str] = []
    for raw in paths:
        p = expand(raw)
        if _has_magic(p):
            matches = sorted(_glob(p))
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
        shown = display_name(rel)
        if shown in seen or _excluded(rel, exclude):
            continue
        seen[shown] = Entry(shown, c)
    return root, [seen[k] for k in sorted(seen)]


@dataclass(frozen=True)
class Owner:
    """Who installed a file of a site-packages source: distribution name (as its metadata
    spells it) and version, and the distribution's declared licence (SPDX or `unknown`)."""

    distribution: Optional[str]
    version: Optional[str]
    licence: str

    def fields(self) -> dict[str, Optional[str]]:
        return {"distribution": self.distribution, "version": self.version, "licence": self.licence}


UNOWNED = Owner(None, None, UNKNOWN)
"""A file that no distribution's RECORD lists (left by a build, a tool, a deleted dist)."""

_PURELIB = "import json, sysconfig; print(json.dumps([sysconfig.get_path('purelib'), sysconfig.get_path('platlib')]))"


def site_dirs(name: str, raw: str) -> list[str]:
    """The site-packages folders a `site-packages` source path names: a site-packages
    folder itself; a virtual environment or prefix (a folder with `pyvenv.cfg`, or with
    lib/python*/site-packages); or a Python executable, asked for its purelib and platlib."""
    p = expand(raw)
    if os.path.isdir(p):
        found = sorted(glob.glob(os.path.join(glob.escape(p), "lib*", "python*", "site-packages")))
        found += sorted(glob.glob(os.path.join(glob.escape(p), "Lib", "site-packages")))
        if found:
            return found
        if os.path.isfile(os.path.join(p, "pyvenv.cfg")):
            raise Phi1Error(f"ingest source {name!r}: {raw!r} is a virtualenv without lib/python*/site-packages")
        return [p]
    if os.path.isfile(p) and os.access(p, os.X_OK):
        try:
            out = subprocess.run([p, "-I", "-c", _PURELIB], capture_output=True, text=True, timeout=120, check=True)
            dirs = json.loads(out.stdout)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise Phi1Error(f"ingest source {name!r}: cannot ask {raw!r} for its site-packages: {msg}") from None
        return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]
    if os.path.lexists(p):
        raise Phi1Error(f"ingest source {name!r}: {raw!r} is neither a folder nor a Python executable")
    raise Phi1Error(f"ingest source {name!r}: path not found: {raw!r} ({p})")


def owners(sites: list[str]) -> tuple[dict[str, Owner], int]:
    """(absolute normalised path -> Owner for every file the distributions in `sites`
    list in their RECORD (or installed-files.txt), number of distributions). Where two
    distributions list one file, the first by (name, version) keeps it."""
    from importlib.metadata import distributions

    dists = [(d, d.metadata) for d in distributions(path=sites)]  # .metadata parses METADATA on each access
    dists.sort(key=lambda dm: ((dm[1]["Name"] or "").lower(), dm[1]["Version"] or ""))
    found: dict[str, Owner] = {}
    for dist, meta in dists:
        owner = Owner(meta["Name"], meta["Version"], declared_licence(meta))
        base = os.fspath(dist.locate_file(""))  # RECORD paths are relative to it (the site folder)
        for f in map(str, dist.files or ()):
            if f.endswith(".py"):
                found.setdefault(os.path.normpath(os.path.join(base, f)), owner)
    return found, len(dists)


@dataclass
class SitePackages:
    """A listed site-packages source: `root`, `entries` (as `list_files` gives them),
    `owners` (shown relative path -> Owner, every entry has one), the site folders and
    how many distributions they hold."""

    root: str
    entries: list[Entry]
    owners: dict[str, Owner]
    sites: list[str]
    n_distributions: int


def site_packages(name: str, paths: tuple[str, ...], exclude: tuple[str, ...] = ()) -> SitePackages:
    """Every .py file of the environments `paths` name (see `site_dirs`), with its owner.
    A folder reached twice (lib64 -> lib) is listed once."""
    sites: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        for d in site_dirs(name, raw):
            if os.path.realpath(d) not in seen:
                seen.add(os.path.realpath(d))
                sites.append(os.path.abspath(d))
    if not sites:
        raise Phi1Error(f"ingest source {name!r}: no site-packages folder in {', '.join(map(repr, paths))}")
    root, entries = list_files(name, tuple(sites), exclude, (".py",))
    by_path, n = owners(sites)
    return SitePackages(root, entries, {e.rel: by_path.get(os.path.normpath(e.abs), UNOWNED) for e in entries},
                        sites, n)


@dataclass
class ReadResult:
    """What reading one file gave: bytes, or the reason it could not be used."""

    data: Optional[bytes]
    size: int
    problem: Optional[str] = None  # "unreadable" | "oversized" | "symlink_outside_root"
    detail: str = ""


class Refused(Exception):
    """A listed file that is not read: `reason` (a drop reason: `unreadable` or
    `symlink_outside_root`) and a one-line `detail`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail or reason


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def confine(path: str, root: str) -> str:
    """`path`'s real path, if it lies under `root`'s real path; else Refused.

    Only os.path.realpath looks at the filesystem here (it lstats each component and
    reads links); a target outside the root is never opened or stat'ed. A dangling link
    or a loop inside the root passes (the read reports it `unreadable` with the reason)."""
    try:
        real, real_root = os.path.realpath(path), os.path.realpath(root)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise Refused("unreadable", f"cannot resolve: {exc}") from None
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise Refused("symlink_outside_root", f"resolves to {display_name(real)}, outside {display_name(real_root)}")
    return real


def _open_regular(path: str, follow: bool) -> int:
    """A file descriptor of a regular file opened for reading; Refused("unreadable") otherwise.

    Non-regular files are refused on `stat`, before any open; the open is also
    non-blocking and re-checked with `fstat`, so a FIFO swapped in between cannot hang
    the reader. `follow=False` opens with O_NOFOLLOW (for a path already resolved)."""
    try:
        st = os.stat(path)
    except OSError as exc:  # dangling symlink, symlink loop, permission
        raise Refused("unreadable", _why(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused("unreadable", "not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:  # ELOOP: the resolved path became a symlink meanwhile
        raise Refused("unreadable", _why(exc)) from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise Refused("unreadable", _why(exc)) from None
    if not regular:
        os.close(fd)
        raise Refused("unreadable", "not a regular file")
    return fd


def open_confined(path: str, root: str) -> BinaryIO:
    """A regular file under `root`, opened for binary reading (see `confine`); Refused
    when it leaves the root or is not a readable regular file."""
    fd = _open_regular(confine(path, root), follow=False)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_limited(path: str, max_bytes: int, root: Optional[str] = None) -> ReadResult:
    """Read at most `max_bytes + 1` bytes of a regular file (one more tells us it is too big).

    With `root`, the file is first confined to it (see `confine`). A file whose size
    already exceeds `max_bytes` is not read at all (the size comes from `stat`, before
    any open)."""
    try:
        if root is not None:
            path = confine(path, root)
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
            return ReadResult(None, st.st_size, "oversized")
        fd = _open_regular(path, follow=root is None)
    except Refused as r:
        return ReadResult(None, 0, r.reason, r.detail)
    except OSError as exc:  # dangling symlink, symlink loop, permission
        return ReadResult(None, 0, "unreadable", _why(exc))
    try:
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:  # EIO, EISDIR on odd filesystems
        return ReadResult(None, 0, "unreadable", _why(exc))
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:  # grew after stat, or stat lied (procfs-like files)
        return ReadResult(None, len(data), "oversized")
    return ReadResult(data, len(data))
