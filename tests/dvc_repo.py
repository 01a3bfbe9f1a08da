"""A temp git + DVC repository holding the real pipeline (dvc.yaml, src/, expectations/)
with test-sized params, for tests that run `dvc repro` or `dvc exp` for real.

    repo = pipeline_repo(tmp_path / "repo", params={...})
    repo.sh("dvc", "repro", "validate")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def tool_env(**extra: str) -> dict[str, str]:
    """os.environ with this venv's bin first on PATH (dvc, phi1) and no analytics."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    env.update(extra)
    return env


@dataclass
class Repo:
    root: Path
    env: dict[str, str]

    def sh(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command in the repo; on failure (with check) show its output."""
        exe = str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]
        done = subprocess.run([exe, *cmd[1:]], cwd=self.root, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0 or not check, f"{' '.join(cmd)} -> {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        return done

    def commit(self, message: str = "pipeline") -> None:
        self.sh("git", "add", "-A")
        self.sh("git", "commit", "-q", "-m", message)


def init_repo(root: Path, env: dict[str, str] | None = None) -> Repo:
    """An empty git + DVC repository at `root`."""
    root.mkdir(parents=True, exist_ok=True)
    repo = Repo(root, env or tool_env())
    repo.sh("git", "init", "-q")
    repo.sh("git", "config", "user.email", "test@example.com")
    repo.sh("git", "config", "user.name", "test")
    repo.sh("dvc", "init", "-q")
    return repo


def pipeline_repo(root: Path, params: dict[str, Any], env: dict[str, str] | None = None) -> Repo:
    """A committed git + DVC repo with the real dvc.yaml, src/ (the stage deps DVC hashes;
    the stages run the installed `phi1`), expectations/ and .gitignore, and `params`
    as params.yaml."""
    repo = init_repo(root, env)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copyfile(REPO / name, root / name)
    shutil.copytree(REPO / "expectations", root / "expectations")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo.commit("pipeline")
    return repo
