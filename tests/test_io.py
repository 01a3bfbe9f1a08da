import pytest

from phi1.io import MARKER, atomic_dir, atomic_file, read_jsonl, read_table, write_shards


def test_atomic_dir_keeps_previous_output_on_failure(tmp_path):
    out = tmp_path / "ds"
    with atomic_dir(out) as tmp:
        write_shards(tmp, [{"id": str(i)} for i in range(5)], shard_size=2)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "part-00000.parquet", "part-00001.parquet",
                                                     "part-00002.parquet"]
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            write_shards(tmp, [{"id": "new"}])
            raise RuntimeError("killed")
    assert read_table(out).column("id").to_pylist() == [str(i) for i in range(5)]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp leftovers


def test_read_jsonl_numbers_lines_and_names_a_bad_one(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b'{"a": 1}\n\n[2]\n')
    assert list(read_jsonl(p)) == [(1, {"a": 1}), (3, [2])]
    p.write_bytes(b'{"a": 1}\n{"a": \n')
    with pytest.raises(Phi1Error, match=r"s.jsonl line 2: not valid JSON"):
        list(read_jsonl(p))
    p.write_bytes(b'"\xff"\n')
    with pytest.raises(Phi1Error, match=r"s.jsonl line 1: not UTF-8"):
        list(read_jsonl(p))


def test_atomic_file(tmp_path):
    p = tmp_path / "m.json"
    with pytest.raises(ValueError):
        with atomic_file(p) as fh:
            fh.write("{partial")
            raise ValueError
    assert not p.exists() and list(tmp_path.iterdir()) == []


def test_stale_temp_of_a_killed_writer_is_removed_and_output_is_world_readable(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".ds.tmp-{dead}-abc"
    stale.mkdir()
    (stale / "part-00000.parquet").write_text("partial")
    with atomic_dir(tmp_path / "ds") as tmp:
        write_shards(tmp, [{"id": "1"}])
    assert not stale.exists()
    assert (tmp_path / "ds").stat().st_mode & 0o755 == 0o755


# ---------------------------------------------------------------- outputs replace only outputs

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import yaml
from typer.testing import CliRunner

from phi1.cli import app
from phi1.errors import Phi1Error
from phi1.io import OutputError, check_output, outputs


def tree_hash(root) -> str:
    """Names, kinds, link targets and contents of everything under `root`."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, root).encode("utf-8", "surrogateescape"))
            if os.path.islink(p):
                h.update(b"L" + os.readlink(p).encode("utf-8", "surrogateescape"))
            elif os.path.isfile(p):
                with open(p, "rb") as fh:
                    h.update(b"F" + fh.read())
            else:
                h.update(b"D")
    return h.hexdigest()


def test_an_output_may_not_be_or_contain_an_input(tmp_path):
    src = tmp_path / "code" / "src"
    src.mkdir(parents=True)
    for out in (src, tmp_path / "code", tmp_path):
        with pytest.raises(OutputError, match=f"output {out} (is|contains) the stage's input {src}"):
            check_output(out, [src])
    check_output(tmp_path / "elsewhere", [src])  # a sibling is fine


def test_an_output_folder_may_not_be_a_file_or_someone_elses_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is an existing file"):
        check_output(tmp_path / "notes.txt")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="not empty and was not written by phi1"):
        check_output(theirs)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")  # an empty folder holds nothing to lose
    with atomic_dir(tmp_path / "ours") as tmp:
        (tmp / "x").write_text("1")
    check_output(tmp_path / "ours")  # marked by phi1: replaceable
    with pytest.raises(OutputError, match="is an existing folder"):
        check_output(tmp_path / "ours", kind="file")


def test_a_dvc_output_without_the_marker_counts_as_phi1s(tmp_path, monkeypatch):
    """`dvc pull`/`checkout` restores an output without the marker (DVC ignores it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "x", "outs": ["data/raw"]}}}))
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "part-00000.parquet").write_text("pulled")
    check_output("data/raw")
    (tmp_path / "data" / "other").mkdir()
    (tmp_path / "data" / "other" / "f").write_text("x")
    with pytest.raises(OutputError):
        check_output("data/other")


def test_outputs_commit_together_or_not_at_all(tmp_path):
    out, metrics = tmp_path / "ds", tmp_path / "m.json"
    with outputs() as staged:
        write_shards(staged.dir(out), [{"id": "old"}])
        staged.json(metrics, {"n": 1})
    with pytest.raises(RuntimeError):
        with outputs() as staged:
            write_shards(staged.dir(out), [{"id": "new"}])
            staged.json(metrics, {"n": 2})
            raise RuntimeError("the metrics could not be written")
    assert read_table(out).column("id").to_pylist() == ["old"]
    assert json.loads(metrics.read_text()) == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "m.json"]


def _ingest(workdir, source, out, metrics="metrics/ingest.json"):
    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({"ingest": {"sources": [{"name": "code", "kind": "local",
                                                              "paths": [str(source)]}]}}))
    return CliRunner().invoke(app, ["ingest", "--params", str(params), "--out", str(out), "--metrics", str(metrics)])


@pytest.mark.parametrize("where", ["parent", "source", "file", "foreign"])
def test_ingest_out_that_would_delete_something_is_refused(workdir, small_corpus, where):
    project = workdir / "home"  # the source and its neighbours; the run's own files stay outside
    project.mkdir()
    small_corpus = Path(shutil.move(small_corpus, project / "corpus"))
    (project / "notes.txt").write_text("unrelated notes next to the source")
    foreign = project / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not phi1's")
    out = {"parent": project, "source": small_corpus, "file": project / "notes.txt", "foreign": foreign}[where]
    before = tree_hash(project)
    result = _ingest(workdir, small_corpus, out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: output") and str(out) in lines[0]
    assert tree_hash(project) == before
    assert not (workdir / "metrics").exists()


def test_ingest_replaces_its_own_output(workdir, small_corpus):
    assert _ingest(workdir, small_corpus, "data/raw").exit_code == 0
    assert _ingest(workdir, small_corpus, "data/raw").exit_code == 0
    assert (workdir / "data/raw" / MARKER).is_file()


def _tmpfs(path, size: str):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): needs root")
    return path


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, filled up."""
    disk = _tmpfs(tmp_path / "disk", "64k")
    try:
        with open(disk / "filler", "wb", buffering=0) as fh:
            with pytest.raises(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_is_one_line_and_leaves_data_and_metrics_agreeing(workdir, small_corpus, full_disk):
    assert _ingest(workdir, small_corpus, "data/raw").exit_code == 0
    data_before = tree_hash(workdir / "data")
    metrics_before = (workdir / "metrics/ingest.json").read_bytes()
    # the metrics file on the full disk: the dataset must not be replaced either
    result = _ingest(workdir, small_corpus, "data/raw", metrics=full_disk / "ingest.json")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(full_disk) in lines[0], lines
    assert tree_hash(workdir / "data") == data_before
    assert (workdir / "metrics/ingest.json").read_bytes() == metrics_before
    # the dataset on the full disk
    result = _ingest(workdir, small_corpus, full_disk / "raw")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]
