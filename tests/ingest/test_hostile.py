"""`phi1 ingest` over hostile input (conftest.make_hostile_tree), run as users run it: the
CLI in a subprocess. Every case ends as a counted reason or a one-line error, the run
finishes, nothing outside the roots is opened, and the input tree is left as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from phi1.ingest.filters import REASONS
from phi1.ingest.sources import unescape_name
from phi1.io import read_table

from .conftest import HOSTILE_EXPECTED, STDLIB, OpenWatch, hostile_params, tree_state

PHI1 = Path(sys.executable).with_name("phi1")


def _ingest(workdir: Path, sources: list[dict], **params) -> subprocess.CompletedProcess:
    (workdir / "params.yaml").write_text(yaml.safe_dump({"ingest": {"sources": sources, **params}}))
    # A blocking open of the outside FIFO would hang here: the timeout turns that into a failure.
    return subprocess.run(
        [str(PHI1), "ingest", "--params", "params.yaml", "--out", "data/raw", "--metrics", "metrics/ingest.json"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_hostile_tree_is_counted_never_crashes_and_never_leaves_the_roots(workdir, hostile_tree):
    before = tree_state(hostile_tree)
    with OpenWatch([hostile_tree / "outside", hostile_tree / "outside" / "fifo.py"]) as watch:
        proc = _ingest(workdir, hostile_params(hostile_tree), min_chars=50, tasks=2, workers=2)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""

    # nothing outside the roots was opened or read, by any process: not the regular file,
    # not the FIFO, not the export or dump that links point at
    assert watch.events == []
    assert tree_state(hostile_tree) == before  # names, types, modes, contents, link targets

    manifest = json.loads((workdir / "data/raw/manifest.json").read_text())
    got = {(f["source"], f["path"]): f["verdict"] for f in manifest["files"]}
    assert got == HOSTILE_EXPECTED

    metrics = json.loads((workdir / "metrics/ingest.json").read_text())
    verdicts = Counter(HOSTILE_EXPECTED.values())
    assert metrics["dropped"] == {r: verdicts[r] for r in REASONS}
    assert metrics["dropped"]["symlink_outside_root"] == 6
    assert metrics["n_read"] == len(HOSTILE_EXPECTED) and metrics["n_kept"] == verdicts["kept"]

    # odd names are stored as valid UTF-8 on one line, and give back the name's bytes
    table = read_table(workdir / "data/raw")
    paths = {(s, p) for s, p in zip(table.column("source").to_pylist(), table.column("path").to_pylist())}
    assert paths == {k for k, v in HOSTILE_EXPECTED.items() if v == "kept"}
    code = os.fsencode(hostile_tree / "code")
    for source, path in paths:
        assert "\n" not in path and len(path.splitlines()) == 1
        if source == "code":
            assert os.path.lexists(os.path.join(code, os.fsencode(unescape_name(path))))
    rows = {p: c for p, c in zip(table.column("path").to_pylist(), table.column("content").to_pylist())}
    assert rows["caf\\xe9.py"].encode() == (STDLIB / "shlex.py").read_bytes()
    assert rows["inside_link.py"].encode() == (hostile_tree / "code/lib/module.txt").read_bytes()
    # what the outside links point at never reached the data
    secret = (hostile_tree / "outside/secret.py").read_text()
    assert secret not in table.column("content").to_pylist()


def test_malformed_parquet_is_one_error_line_naming_it(workdir, hostile_tree):
    before = tree_state(hostile_tree)
    proc = _ingest(workdir, [{"name": "broken", "kind": "parquet", "paths": [str(hostile_tree / "broken")]}])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ingest source 'broken': bro\\x0aken.parquet is not a parquet file (")
    assert not (workdir / "data/raw").exists() and not (workdir / "metrics/ingest.json").exists()
    assert tree_state(hostile_tree) == before

