"""README's "A team setup" for real: an `mlflow server` on PostgreSQL with its artifacts
in S3 (moto), the pipeline tracked and registered through it, a DVC S3 remote, and the
server's `--allowed-hosts` (`pytest -m cluster tests/test_team_tracking.py`).

The services (tests/services.py) run on 127.0.0.1 for this module: a throwaway
PostgreSQL cluster (Debian `postgresql`), moto's S3 server and `mlflow server
--backend-store-uri postgresql://... --artifacts-destination s3://phi1-mlflow/artifacts
--serve-artifacts --allowed-hosts ...`, which alone holds the S3 keys. The stages run
with only MLFLOW_TRACKING_URI=http://127.0.0.1:<port> (no AWS_* in their environment),
and the asserts read the runs back from PostgreSQL and the files from the bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import mlflow
import pytest
import torch
import yaml
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file
from transformers import AutoTokenizer
from typer.testing import CliRunner

from phi1.cli import app
from phi1.config import EvaluateConfig, RegisterConfig, TokenizeConfig, to_dict
from phi1.io import write_shards
from tests.conftest import CORPUS_FILES
from tests.dvc_repo import Repo, init_repo, tool_env
from tests.mlflow_server import MlflowServer, free_port, mlflow_server
from tests.services import S3, Postgres, postgres_cluster, s3_server
from tests.test_dvc_remote import DVC_YAML, MAKE
from tests.training_env import one_thread  # noqa: F401  (autouse here too)
from tests.training_fixtures import EXERCISE_FILES, STDLIB, exercise_rows, filtered_rows, pretrain_cfg

pytestmark = pytest.mark.cluster

ARTIFACTS_BUCKET, DVC_BUCKET = "phi1-mlflow", "phi1-dvc"
TEAM_HOST = "mlflow.internal"  # the name clients use; with the server's port, in --allowed-hosts
EXPERIMENT = "phi1-team"
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE",
            "MLFLOW_S3_ENDPOINT_URL")


@dataclass
class Team:
    pg: Postgres
    s3: S3
    server: MlflowServer

    def hosts(self, name: str) -> str:
        return f"{name}:{self.server.port}"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def _team(s3, tmp_path_factory) -> Iterator[Future]:
    """PostgreSQL, and the team's MLflow server on it with its artifacts in the S3 bucket,
    started in the background as the module begins (the server takes tens of seconds to
    migrate its schema and start), so the DVC test runs meanwhile."""
    logs = tmp_path_factory.mktemp("team")
    stack = contextlib.ExitStack()

    def start() -> Team:
        pg = stack.enter_context(postgres_cluster())
        pg.create_database("mlflow")
        s3.client().create_bucket(Bucket=ARTIFACTS_BUCKET)
        port = free_port()
        server = stack.enter_context(mlflow_server(
            pg.url("mlflow"), artifacts=f"s3://{ARTIFACTS_BUCKET}/artifacts", log=logs / "mlflow.log", port=port,
            args=["--allowed-hosts", f"127.0.0.1:{port},{TEAM_HOST}:{port}"], env={**os.environ, **s3.env}))
        return Team(pg, s3, server)

    with stack, ThreadPoolExecutor(1) as pool:
        starting = pool.submit(start)
        yield starting
        with contextlib.suppress(Exception):
            # A throwaway: killed (its process group), not stopped, which would wait ~30 s on
            # MLflow's job runner; then PostgreSQL stops and the cluster is removed.
            starting.result(timeout=300).server.kill()


@pytest.fixture
def team(_team: Future) -> Team:
    return _team.result(timeout=300)


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, f"phi1 {' '.join(args)}:\n{res.output}\n{res.exception!r}"
    return res.output


# --------------------------------------------------------------------------- DVC


def test_dvc_push_and_pull_through_an_s3_remote_restore_the_outputs_byte_for_byte(s3, tmp_path):
    s3.client().create_bucket(Bucket=DVC_BUCKET)
    repo = init_repo(tmp_path / "repo", tool_env(**s3.env))
    (repo.root / "make.py").write_text(MAKE)
    (repo.root / "dvc.yaml").write_text(DVC_YAML.format(python=sys.executable))
    # README's commands, the endpoint being moto's instead of MinIO's
    repo.sh("dvc", "remote", "add", "-d", "team", f"s3://{DVC_BUCKET}/store")
    repo.sh("dvc", "remote", "modify", "team", "endpointurl", s3.endpoint)
    repo.sh("dvc", "repro", "-q")
    repo.commit("data")
    made = {p.name: p.read_bytes() for p in (repo.root / "data/raw").iterdir()}

    repo.sh("dvc", "push", "-q")
    keys = s3.keys(DVC_BUCKET, "store/")
    assert len(keys) == 3 and all(k.startswith("store/files/md5/") for k in keys), keys  # 2 files + the listing

    # A teammate: git clone, then dvc pull (the remote is in the committed .dvc/config)
    # into an empty cache: every byte comes from the bucket.
    clone = tmp_path / "clone"
    repo.sh("git", "clone", "-q", str(repo.root), str(clone))
    Repo(clone, repo.env).sh("dvc", "pull", "-q")
    assert {p.name: p.read_bytes() for p in (clone / "data/raw").iterdir()} == made


# --------------------------------------------------------------------------- --allowed-hosts


def test_the_server_refuses_a_host_header_not_in_allowed_hosts(team):
    api = f"{team.server.url}/api/2.0/mlflow"
    for host in (team.hosts(TEAM_HOST), team.hosts("127.0.0.1")):
        assert httpx.get(f"{api}/experiments/search", params={"max_results": 1}, headers={"Host": host},
                         timeout=30).status_code == 200, host
    # Not listed: another name (DNS rebinding), localhost (allowed by MLflow's default list,
    # which --allowed-hosts replaces), the right name on another port.
    for host in (team.hosts("evil.example"), team.hosts("localhost"), f"{TEAM_HOST}:5000"):
        res = httpx.get(f"{api}/experiments/search", params={"max_results": 1}, headers={"Host": host}, timeout=30)
        assert res.status_code == 403 and "Invalid Host header" in res.text, (host, res.status_code)
    # A write from a refused host changes nothing in the store.
    res = httpx.post(f"{api}/experiments/create", json={"name": "rebound"}, headers={"Host": team.hosts("evil.example")},
                     timeout=30)
    assert res.status_code == 403
    assert team.pg.query("mlflow", "SELECT name FROM experiments WHERE name = %s", "rebound") == []


# --------------------------------------------------------------------------- the pipeline


def _datasets() -> None:
    """CodeTextbook (filtered) and CodeExercises datasets from standard-library files."""
    filtered, exercises = Path("data/codetextbook/filtered"), Path("data/codeexercises")
    filtered.mkdir(parents=True)
    exercises.mkdir(parents=True)
    write_shards(filtered, filtered_rows([STDLIB / f for f in CORPUS_FILES], STDLIB), shard_size=8)
    write_shards(exercises, exercise_rows([STDLIB / f for f in EXERCISE_FILES]), shard_size=50)


def test_the_pipeline_tracks_into_postgresql_and_stores_its_artifacts_in_s3(team, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in AWS_VARS:  # the clients hold no S3 keys: the server proxies the artifacts
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.server.url)
    monkeypatch.setenv("PHI1_EXPERIMENT", EXPERIMENT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _datasets()
    # One training stage stands for both (finetune runs the same engine): pretrain's export
    # is the checkpoint evaluated, registered as `phi1` and promoted.
    Path("params.yaml").write_text(yaml.safe_dump({
        "tokenize": to_dict(TokenizeConfig(vocab_size=512, seq_len=64, val_fraction=0.1)),
        "pretrain": to_dict(pretrain_cfg(max_steps=4, eval_every=2, checkpoint_every=4, log_model=True)),
        "evaluate": to_dict(EvaluateConfig(checkpoints=("checkpoints/phi1",), benchmarks=("humaneval",), limit=1,
                                           max_new_tokens=8, workers=1, solution_loss_limit=2)),
        "register": to_dict(RegisterConfig(base_model_name=None, base_checkpoint=None,
                                           gate_metrics={"eval.humaneval.pass_at_1": "higher"})),
    }))
    _cli("tokenize", "-p", "params.yaml", "--pretrain-input", "data/codetextbook/filtered",
         "--finetune-input", "data/codeexercises")
    _cli("pretrain", "-p", "params.yaml", "--out", "checkpoints/phi1")
    _cli("evaluate", "run", "-p", "params.yaml")
    _cli("register", "-p", "params.yaml")
    promoted = _cli("promote", "-p", "params.yaml")
    assert "champion" in promoted

    client = mlflow.MlflowClient(tracking_uri=team.server.url)
    exp = client.get_experiment_by_name(EXPERIMENT)
    data = client.get_experiment_by_name(EXPERIMENT + "-data")  # the data stages and register (DATA_STAGES)
    assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"  # made by the server: proxied
    assert data.artifact_location == f"mlflow-artifacts:/{data.experiment_id}"
    every = client.search_runs([exp.experiment_id, data.experiment_id])
    runs = {r.data.tags["phi1.stage"]: r for r in every if "mlflow.parentRunId" not in r.data.tags}
    assert set(runs) == {"tokenize", "pretrain", "evaluate", "register"}
    assert {s for s, r in runs.items() if r.info.experiment_id == data.experiment_id} == {"tokenize", "register"}
    assert all(r.info.status == "FINISHED" for r in every)
    champion = client.get_model_version_by_alias("phi1", "champion")
    assert champion.version == "1" and champion.run_id == runs["pretrain"].info.run_id

    # PostgreSQL holds the runs, their metrics and the registry.
    pg = team.pg
    stored = dict(pg.query("mlflow", """
        SELECT t.value, r.run_uuid FROM runs r
        JOIN experiments e ON e.experiment_id = r.experiment_id
        JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'phi1.stage'
        WHERE e.name IN (%s, %s) AND r.status = 'FINISHED'""", EXPERIMENT, EXPERIMENT + "-data"))
    assert stored == {stage: r.info.run_id for stage, r in runs.items()}
    assert pg.query("mlflow", "SELECT count(*) FROM runs") == [(len(every),)]
    pre = runs["pretrain"]
    latest = dict(pg.query("mlflow", "SELECT key, CASE WHEN is_nan THEN 'NaN'::float ELSE value END "
                           "FROM latest_metrics WHERE run_uuid = %s", pre.info.run_id))
    assert latest == pytest.approx(pre.data.metrics, nan_ok=True)
    (val_loss,) = [k for k in latest if k.split("/")[-1] == "val_loss"]  # (or <stage>/val_loss)
    steps = pg.query("mlflow", "SELECT step FROM metrics WHERE run_uuid = %s AND key = %s ORDER BY step",
                     pre.info.run_id, val_loss)
    assert [s for (s,) in steps] == [0, 2, 4]
    assert set(pg.query("mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name = 'phi1'")) == {
        ("champion", 1), ("challenger", 1)}
    (source,) = pg.query("mlflow", "SELECT source FROM model_versions WHERE name = 'phi1' AND version = 1")
    assert source == (f"models:/{champion.tags['phi1.model_id']}",)

    # The bucket holds the artifacts, where the server's URIs say: mlflow-artifacts:/X is
    # s3://phi1-mlflow/artifacts/X.
    keys = set(team.s3.keys(ARTIFACTS_BUCKET, "artifacts/"))

    def key(uri: str, path: str) -> str:
        assert uri.startswith("mlflow-artifacts:/"), uri
        return f"artifacts/{uri.removeprefix('mlflow-artifacts:/').strip('/')}/{path}"

    assert {key(pre.info.artifact_uri, "plots/loss.png"), key(pre.info.artifact_uri, "config/pretrain.json")} <= keys
    logged = mlflow.get_logged_model(champion.tags["phi1.model_id"])
    (weights,) = [k for k in keys if k.startswith(key(logged.artifact_location, "")) and k.endswith(".safetensors")]
    ours = load_file("checkpoints/phi1/model.safetensors")
    body = team.s3.client().get_object(Bucket=ARTIFACTS_BUCKET, Key=weights)["Body"].read()
    in_s3 = load_safetensors(body)
    assert in_s3.keys() == ours.keys() and all(torch.equal(in_s3[k], ours[k]) for k in ours)
    evaluations = [r for r in every if r.data.tags.get("mlflow.parentRunId") == runs["evaluate"].info.run_id]
    assert evaluations and all(key(r.info.artifact_uri, "eval_results_table.json") in keys for r in evaluations)

    # The champion loads through the server, from the bucket: the same weights and tokenizer.
    pipe = mlflow.transformers.load_model("models:/phi1@champion")
    loaded = pipe.model.state_dict()
    assert all(torch.equal(loaded[k], ours[k]) for k in ours)
    assert pipe.tokenizer.get_vocab() == AutoTokenizer.from_pretrained("checkpoints/phi1").get_vocab()

    # Nothing bypassed the server: no local store or artifact root here.
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()
    assert json.loads(Path("metrics/register.json").read_text())["phi1"]["version"] == 1
