"""The repository's default DVC remote: `dvc push` / `dvc pull` work in a fresh clone.

A temp git + DVC repo with the real .dvc/config and .gitignore and a one-stage dvc.yaml:
repro, push, lose the outputs and the cache, pull, and the bytes are back; a second clone
reaches the first one's storage through a `--local` override of the remote's url.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

MAKE = """\
import pathlib
out = pathlib.Path("data/raw")
out.mkdir(parents=True)
(out / "notes.txt").write_text("phi1 dvc remote\\n" * 100)
(out / "blob.bin").write_bytes(bytes(range(256)) * 64)
"""

DVC_YAML = """\
stages:
  make:
    cmd: {python} make.py
    deps:
      - make.py
    outs:
      - data/raw
"""


def test_the_default_remote_is_a_folder_of_the_clone():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc/config")
    assert cfg["core"]["remote"] == "local"
    url = cfg['\'remote "local"\'']["url"]
    # relative to .dvc/ (where DVC resolves it): <clone>/.dvc-storage, whichever folder the clone is in
    assert not os.path.isabs(url) and (REPO / ".dvc" / url).resolve() == REPO / ".dvc-storage"
    assert "/.dvc-storage" in (REPO / ".gitignore").read_text().splitlines()


@pytest.mark.slow
def test_push_then_pull_restores_the_outputs_byte_for_byte(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    dvc = str(bin_dir / "dvc")
    repo = tmp_path / "repo"
    repo.mkdir()

    def sh(*cmd, cwd=repo, check=True):
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert done.returncode == 0 or not check, f"{cmd}:\n{done.stdout}\n{done.stderr}"
        return done

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "test@example.com")
    sh("git", "config", "user.name", "test")
    sh(dvc, "init", "-q")
    shutil.copyfile(REPO / ".dvc/config", repo / ".dvc/config")
    shutil.copyfile(REPO / ".gitignore", repo / ".gitignore")
    (repo / "make.py").write_text(MAKE)
    (repo / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    sh(dvc, "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "data")
    made = {p.name: p.read_bytes() for p in (repo / "data/raw").iterdir()}

    sh(dvc, "push", "-q")
    storage = repo / ".dvc-storage"
    assert storage.is_dir() and len([p for p in storage.rglob("*") if p.is_file()]) == 3  # 2 files + dir listing
    assert sh("git", "status", "--porcelain").stdout == ""  # the storage is git-ignored
    assert "in sync" in sh(dvc, "status", "--cloud").stdout

    shutil.rmtree(repo / "data/raw")
    shutil.rmtree(repo / ".dvc/cache")
    assert "not in cache" in sh(dvc, "status").stdout
    sh(dvc, "pull", "-q")
    assert {p.name: p.read_bytes() for p in (repo / "data/raw").iterdir()} == made
    assert "up to date" in sh(dvc, "status").stdout

    # Another clone has its own (empty) storage; pointing `local` at the first one's, in
    # the clone's untracked config.local, lets it pull without touching .dvc/config.
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert sh(dvc, "pull", "-q", cwd=clone, check=False).returncode != 0
    sh(dvc, "remote", "modify", "--local", "local", "url", str(storage), cwd=clone)
    sh(dvc, "pull", "-q", cwd=clone)
    assert {p.name: p.read_bytes() for p in (clone / "data/raw").iterdir()} == made
    assert sh("git", "status", "--porcelain", cwd=clone).stdout == ""
