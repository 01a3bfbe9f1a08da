import pytest

from phi1.io import atomic_dir, atomic_file, read_table, write_shards


def test_atomic_dir_keeps_previous_output_on_failure(tmp_path):
    out = tmp_path / "ds"
    with atomic_dir(out) as tmp:
        write_shards(tmp, [{"id": str(i)} for i in range(5)], shard_size=2)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            write_shards(tmp, [{"id": "new"}])
            raise RuntimeError("killed")
    assert read_table(out).column("id").to_pylist() == [str(i) for i in range(5)]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp leftovers


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
