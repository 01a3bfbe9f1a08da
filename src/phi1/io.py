"""Output helpers: nothing half-written on failure.

Every stage writes its outputs through `atomic_dir` / `atomic_file`: the content goes to
a temporary sibling first and is renamed into place only when the block finishes, so a
killed or failing stage leaves the previous output (or nothing), never a partial one.
Datasets are folders of parquet shards `part-00000.parquet`, ...
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` when the block succeeds."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    # mkdtemp makes a 0700 folder; give the output the permissions a plain mkdir would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        yield tmp
        old = None
        if dest.exists() or dest.is_symlink():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")


def _remove_stale_temps(dest: Path) -> None:
    """Remove temp siblings left by a writer that was killed (its pid is gone)."""
    for p in dest.parent.glob(f".{dest.name}.tmp-*"):
        pid = p.name[len(f".{dest.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def write_shards(
    out_dir: str | Path, rows: Iterable[dict[str, Any]], shard_size: int = 2000,
    schema: pa.Schema | None = None,
) -> int:
    """Write dict rows as `part-NNNNN.parquet` shards into an existing directory; return the row count."""
    out = Path(out_dir)
    buf: list[dict[str, Any]] = []
    n = shard = 0

    def flush():
        nonlocal shard
        table = pa.Table.from_pylist(buf, schema=schema)
        pq.write_table(table, out / f"part-{shard:05d}.parquet")
        shard += 1
        buf.clear()

    for row in rows:
        buf.append(row)
        n += 1
        if len(buf) >= shard_size:
            flush()
    if buf or shard == 0:
        if not buf and schema is None:
            return 0
        flush()
    return n


def shard_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"dataset not found: {p}")
    return sorted(p.glob("*.parquet"))


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All shards of a dataset folder (or one parquet file) as one table."""
    files = shard_files(path)
    if not files:
        raise FileNotFoundError(f"dataset has no parquet shards: {path}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def iter_rows(path: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    for f in shard_files(path):
        yield from pq.read_table(f, columns=columns).to_pylist()
