"""Output helpers: nothing half-written on failure, and nothing but outputs replaced.

    with outputs(inputs=[raw, annotations]) as o:
        write_shards(o.dir(out), rows)          # a temp sibling of `out`
        o.json(metrics_path, metrics)           # a temp sibling of the metrics file
    # here both are renamed into place, together; on an exception, neither is

Every stage writes its outputs through `outputs` (or `atomic_dir` / `atomic_file` for a
single one): the content goes to temporary siblings first and is renamed into place only
when the block finishes, so a killed or failing stage leaves the previous outputs (or
nothing), never a partial one, and a dataset and its metrics never disagree.

Before anything is written, each output path is checked; a path that fails raises a
one-line `OutputError` naming it. An output may not be, or contain, one of the stage's
inputs; an output folder may not be an existing file, nor a non-empty folder phi1 did
not write. phi1 marks the folders it writes with the file `.phi1-output` (DVC ignores
it, see .dvcignore, so it changes no hash); a folder that is a DVC output of the project
(in dvc.yaml, e.g. restored by `dvc pull`, which does not restore the marker) counts as
written by phi1 too. Datasets are folders of parquet shards `part-00000.parquet`, ...
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

from phi1.errors import Phi1Error

MARKER = ".phi1-output"
"""The file in every folder phi1 writes: what makes a folder safe to replace."""
_MARKER_TEXT = "written by phi1; the next run of the stage that wrote this folder replaces it\n"

PathLike = str | os.PathLike


class OutputError(Phi1Error):
    """An output path that would replace something that is not a phi1 output."""


def _real(p: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _dvc_outs(project: Path) -> set[Path]:
    """The real paths of every `outs` entry of the project's dvc.yaml (cwd), if any."""
    import yaml

    try:
        spec = yaml.safe_load((project / "dvc.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    found: set[Path] = set()
    for stage in (spec.get("stages") or {}).values():
        if not isinstance(stage, dict):
            continue
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key) or []:
                name = next(iter(item)) if isinstance(item, dict) else item
                if isinstance(name, str) and "${" not in name:
                    found.add(_real(project / name))
    return found


def written_by_phi1(folder: PathLike) -> bool:
    """Whether `folder` carries phi1's marker or is a DVC output of the project in cwd."""
    folder = Path(folder)
    return (folder / MARKER).is_file() or _real(folder) in _dvc_outs(Path.cwd())


def check_output(path: PathLike, inputs: Iterable[PathLike] = (), kind: str = "dir") -> None:
    """Raise OutputError unless `path` may be replaced by an output of `kind` (dir|file)."""
    dest = Path(path)
    real = _real(dest)
    for item in inputs:
        if item is None:
            continue
        inp = _real(item)
        if _within(inp, real):
            what = "is" if inp == real else "contains"
            raise OutputError(f"output {dest} {what} the stage's input {item}; choose another output path")
    if not (dest.exists() or dest.is_symlink()):
        return
    if kind == "file":
        if dest.is_dir():
            raise OutputError(f"output file {dest} is an existing folder; choose another output path")
        return
    if not dest.is_dir():
        raise OutputError(f"output folder {dest} is an existing file, not a phi1 output; "
                          "choose another output path or remove it")
    if any(dest.iterdir()) and not written_by_phi1(dest):
        raise OutputError(f"output folder {dest} is not empty and was not written by phi1 (no {MARKER}); "
                          "choose another output path or remove it")


class Outputs:
    """The outputs of one stage run: staged in temp siblings, committed together."""

    def __init__(self, inputs: Iterable[PathLike] = ()):
        self.inputs = [p for p in inputs if p is not None]
        self._staged: list[tuple[Path, Path, str]] = []  # (temp, dest, kind)

    def dir(self, path: PathLike) -> Path:
        """A fresh temp folder that becomes `path` on commit (marked as phi1's)."""
        dest = Path(path)
        check_output(dest, self.inputs, "dir")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
        # mkdtemp makes a 0700 folder; give the output the permissions a plain mkdir would
        os.chmod(tmp, 0o777 & ~_umask())
        self._staged.append((tmp, dest, "dir"))
        return tmp

    def file(self, path: PathLike) -> Path:
        """A temp file path (created empty) that becomes `path` on commit."""
        dest = Path(path)
        check_output(dest, self.inputs, "file")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(dest)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        self._staged.append((Path(tmp), dest, "file"))
        return Path(tmp)

    def json(self, path: PathLike, obj: Any) -> None:
        """Stage `obj` as pretty, key-sorted JSON at `path`."""
        with naming(path), open(self.file(path), "w") as fh:
            _dump_json(obj, fh)

    def commit(self) -> None:
        """Rename every staged output into place: first mark the folders and move the old
        outputs aside, then rename all temps in, then delete the old ones."""
        for tmp, _, kind in self._staged:
            if kind == "dir":
                (tmp / MARKER).write_text(_MARKER_TEXT)
        moved: list[tuple[Path, Path]] = []
        done: list[tuple[Path, Path]] = []
        try:
            for _, dest, kind in self._staged:
                if kind == "dir" and (dest.exists() or dest.is_symlink()):
                    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
                    os.replace(dest, old)
                    moved.append((old, dest))
            for tmp, dest, _ in self._staged:
                os.replace(tmp, dest)
                done.append((tmp, dest))
        except BaseException:  # put back what was there: all or nothing
            for tmp, dest in reversed(done):
                with contextlib.suppress(OSError):
                    os.replace(dest, tmp)
            for old, dest in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(old, dest)
            raise
        self._staged.clear()
        for old, _ in moved:
            _remove(old)

    def discard(self) -> None:
        for tmp, _, _ in self._staged:
            _remove(tmp)
        self._staged.clear()


@contextlib.contextmanager
def outputs(inputs: Iterable[PathLike] = ()) -> Iterator[Outputs]:
    """Stage a run's outputs; commit them together when the block succeeds."""
    staged = Outputs(inputs)
    try:
        yield staged
        staged.commit()
    except BaseException:
        staged.discard()
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` when the block succeeds."""
    with outputs(inputs) as staged:
        yield staged.dir(path)


@contextlib.contextmanager
def atomic_file(path: PathLike, mode: str = "w", inputs: Iterable[PathLike] = ()) -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    with naming(path), outputs(inputs) as staged, open(staged.file(path), mode) as fh:
        yield fh


@contextlib.contextmanager
def naming(path: PathLike) -> Iterator[None]:
    """Give an OSError raised inside (a write to an open file, pyarrow's writer) the
    `path` it was writing, so its one-line error says where the disk was full."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        code = exc.errno
        if code is None and "No space left on device" in str(exc):  # pyarrow's wording
            import errno

            code = errno.ENOSPC
        if code is None:
            raise
        raise OSError(code, os.strerror(code), os.fspath(path)) from exc


def _dump_json(obj: Any, fh) -> None:
    json.dump(obj, fh, indent=2, sort_keys=True, default=str)
    fh.write("\n")


def write_json(path: PathLike, obj: Any) -> None:
    with atomic_file(path) as fh:
        _dump_json(obj, fh)


def read_jsonl(path: PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON-lines file; a line that is
    not UTF-8 or not JSON is a one-line Phi1Error naming the file and the line."""
    p = Path(path)
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Phi1Error(f"{p} line {lineno}: not UTF-8 (byte {exc.start + 1}: {exc.reason})") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise Phi1Error(f"{p} line {lineno}: not valid JSON ({exc.msg})") from None
            yield lineno, value


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _remove_stale_temps(dest: Path) -> None:
    """Remove temp siblings left by a writer that was killed (its pid is gone)."""
    for pattern in (f".{dest.name}.tmp-", f".{dest.name}.old-"):
        for p in dest.parent.glob(f"{pattern}*"):
            pid = p.name[len(pattern):].split("-", 1)[0]
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
        path = out / f"part-{shard:05d}.parquet"
        with naming(path):
            pq.write_table(table, path)
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


def dataset_shards(path: str | Path, what: str, producer: str | None = None) -> list[Path]:
    """The parquet shards of a stage's input dataset; a missing folder, or one without
    shards, is a Phi1Error naming it (and `phi1 <producer>`, the stage that writes it)."""
    hint = f" (run `phi1 {producer}`)" if producer else ""
    try:
        files = shard_files(path)
    except FileNotFoundError:
        raise Phi1Error(f"{what} dataset not found: {path}{hint}") from None
    if not files:
        raise Phi1Error(f"{what} dataset has no parquet shards: {path}{hint}")
    return files


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All shards of a dataset folder (or one parquet file) as one table."""
    files = shard_files(path)
    if not files:
        raise FileNotFoundError(f"dataset has no parquet shards: {path}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def iter_rows(path: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    for f in shard_files(path):
        yield from pq.read_table(f, columns=columns).to_pylist()
