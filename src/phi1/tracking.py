"""The MLflow seam: every stage opens its run here.

    with stage_run("filter", cfg, inputs=["data/raw", "data/annotations"]) as run:
        mlflow.log_metrics({...})

Tracking URI: `MLFLOW_TRACKING_URI` when set, else `sqlite:///mlflow.db` (MLflow 3
refuses a plain `mlruns` file store); artifacts of experiments created here go under
`mlruns/`. Experiment: `PHI1_EXPERIMENT`, default `phi1`, which holds the models and their
evaluations (the training, evaluate, probe and ablate runs); the data stages and register
log to its sibling `<experiment>-data` (`DATA_STAGES`), so that MLflow's Evaluation runs
page lists only evaluations (`stage_experiment`). Each run is tagged with the
stage, the git commit, and the hash of each input (from dvc.lock when DVC produced it,
else computed here), so a run says which data made it. Runs of a DVC experiment (`dvc exp
run` sets `DVC_EXP_NAME`) or of a named variant (`PHI1_VARIANT`, which wins) are also
tagged `phi1.variant`, so `phi1 ablate` and the MLflow UI can group them; a seed repeat's
experiment `<variant>-seed<N>` is tagged `phi1.variant` = `<variant>` and `phi1.seed` = N.

A stage run's headline figures (`HEADLINES`) are logged again as `<stage>/<figure>`, and a
training run's loss curve as `<stage>/loss`: the MLflow UI draws that section first
(`headline_key`). A local sqlite store copied or moved with its project is rebased onto
its new folder when `setup` opens it (`rebase_store`): MLflow records absolute paths.

Failure behaviour. The `tracking:` section of params.yaml (`TrackingConfig`, read by the
CLI through `configure`) sets MLflow's HTTP timeout, retries and backoff; they win over
`MLFLOW_HTTP_REQUEST_*` in the environment. With the defaults a request to a server that
refuses connections or answers 408/429/5xx gives up after about 10 s, and one to a
server that accepts but never answers after about 50 s (4 tries of 10 s plus the
backoff), so a stage never waits a minute on a lost server. Once a request failed that
way, this process calls the server at most once more (to close the run: no retry, 2 s).

A lost or failing tracking server fails the stage, before its work or after it: one
`TrackingError` naming the URI (the CLI prints one `error:` line and exits 2). After the
work too, because stages log with MLflow's fluent API inline: the failed call ends the
stage body where it stands, so nothing here can tell that the rest of the stage ran, and
a stage that exits 0 must be complete. A failed stage is what DVC understands: it leaves
dvc.lock as it was and reruns the stage on the next `dvc repro`, so DVC and MLflow agree
that the stage did not finish. What the stage wrote before the failure stays on disk
(phi1.io writes folders whole or not at all). The training stages are the exception
(phi1.engines.training.track): they keep every metric in CSV files, warn, and exit 0.

A run that could not be closed (the server was gone) is written to a small record per
tracking URI in the user cache (`$XDG_CACHE_HOME/phi1/tracking-<hash>.jsonl`, so DVC's
temporary experiment workspaces share it); the next `stage_run` that reaches that server
ends each such run as FAILED, tagged `phi1.tracking_failure` with the reason, at the time
it failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import yaml

from phi1.config import TrackingConfig, from_dict, read_params, to_dict
from phi1.errors import Phi1Error

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlruns"
DEFAULT_EXPERIMENT = "phi1"


class TrackingError(Phi1Error, RuntimeError):
    """The tracking server or store cannot be used."""


_settings = TrackingConfig()
_lost: str | None = None
"""Why this process gave up on the tracking server (None while it answers): later calls
to close runs then get one short try."""


def configure(params_path: str | Path) -> TrackingConfig:
    """Read the `tracking:` section of a params file (its defaults where absent) for the
    runs this process opens; the CLI calls it with the stage's params file."""
    global _settings
    _settings = from_dict(TrackingConfig, read_params(params_path).get("tracking") or {}, "tracking")
    return _settings


def _http_env(retries: int, timeout: int, backoff: int | None = None) -> dict[str, str]:
    # Read by MLflow at every request (mlflow/utils/rest_utils.py http_request), so they
    # take effect at once; its request sessions are cached per (retries, backoff, ...).
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    if backoff is not None:
        env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(backoff)
    return env


@contextlib.contextmanager
def environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (a str) or unset (None) environment variables within the block; restore after."""
    old = {k: os.environ.get(k) for k in values}
    try:
        _set_environ(values)
        yield
    finally:
        _set_environ(old)


def _set_environ(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _one_short_try():
    """MLflow requests within: no retry, 2 s timeout (closing a run on a server just lost)."""
    return environ(_http_env(0, 2))


def store_failure(exc: BaseException) -> BaseException | None:
    """The failure of the tracking server in `exc` or its causes (refused connection,
    timeout, retries used up on 408/429/5xx, a TrackingError), or None: an error of the
    request itself (a bad parameter, a missing run) is not one."""
    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (TrackingError, requests.ConnectionError, requests.Timeout)):
            return e
        # mlflow/utils/rest_utils.py http_request: every transport failure is raised so
        if isinstance(e, MlflowException) and e.message.startswith("API request to"):
            return e
        e = e.__cause__ or e.__context__
    return None


def _reason(exc: BaseException) -> str:
    """One short line for a transport error (urllib3's are a paragraph of reprs)."""
    msg = str(exc)
    if m := re.search(r"too many (\d{3}) error responses", msg):
        return f"HTTP {m[1]} after {_settings.http_retries} retries"
    if m := re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", msg):
        return m[1].strip()
    if re.search(r"timed? ?out", msg, re.IGNORECASE):
        return f"no answer within {_settings.http_timeout} s"
    line = msg.splitlines()[0] if msg else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def experiment_name() -> str:
    return os.environ.get("PHI1_EXPERIMENT") or DEFAULT_EXPERIMENT


def variant_name() -> str | None:
    """`PHI1_VARIANT`, else the DVC experiment this process runs in (DVC's queue and temp
    runs set `DVC_EXP_NAME`, see dvc/repo/experiments/queue/base.py), else None."""
    return os.environ.get("PHI1_VARIANT") or os.environ.get("DVC_EXP_NAME") or None


_SEEDED = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def exp_name(variant: str, seed: int | None = None) -> str:
    """The DVC experiment name of a variant, or of one seed of it (`filtered-seed7`)."""
    return variant if seed is None else f"{variant}-seed{seed}"


def split_exp_name(name: str) -> tuple[str, int | None]:
    """(variant, seed) of an experiment name from `exp_name`; seed None when unseeded."""
    m = _SEEDED.match(name)
    return (m["variant"], int(m["seed"])) if m else (name, None)


def variant_tags() -> dict[str, str]:
    """`phi1.variant` (and `phi1.seed` for a seed repeat) of this process's variant, or {}:
    for every run, nested ones too, so a search by variant finds all of a variant's runs."""
    name = variant_name()
    if not name:
        return {}
    variant, seed = split_exp_name(name)
    return {"phi1.variant": variant, **({} if seed is None else {"phi1.seed": str(seed)})}


def _check_reachable(uri: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    import httpx

    wait = min(5.0, _settings.http_timeout)
    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=wait)
    except httpx.HTTPError as exc:
        why = f"no answer within {wait:g} s" if isinstance(exc, httpx.TimeoutException) else _reason(exc)
        raise TrackingError(f"MLflow tracking server unreachable at {uri}: {why}") from None


DATA_SUFFIX = "-data"
DATA_STAGES = frozenset({"ingest", "annotate", "embed", "filter", "synthesize", "decontaminate", "validate",
                         "tokenize", "register"})
"""The stages whose runs go to the experiment's data sibling `<experiment>-data`: they
neither train the model nor evaluate it. The other stages (pretrain, finetune: their runs
log the model; evaluate, probe, ablate: evaluations) log to the experiment itself.

Why: MLflow 3's UI, in its GenAI view (the default; the view toggle is read from the URL's
`?workflowType=`, then the browser's local storage, and wins over the experiment's
`mlflow.experimentKind` tag), shows an experiment's "Evaluation runs" page, which lists
every active run of the experiment that has no logged-model output
(mlflow/server/js/src/experiment-tracking/components/experiment-page/hooks/
useExperimentEvaluationRunsData.tsx, as built into MLflow 3.17.2's server bundle:
`run.outputs.modelOutputs` empty -> evaluation run; no tag or run attribute takes a run
off that page). A data stage's run there would be shown as an evaluation; with the data
stages in the sibling, the main experiment's page lists evaluate, probe and ablate (and
their nested benchmark runs) only. A training run logs its model (`log_model: true`, the
default) and is listed as a training run instead."""

DATA_NOTE = ("phi1's data stages ({stages}): runs that neither train a model nor evaluate one. "
             "The models and their evaluations are in experiment {main}.")
"""The data sibling's description (`mlflow.note.content`, shown on its experiment page)."""


def data_experiment_name(experiment: str | None = None) -> str:
    """`<experiment>-data` of an experiment (default: $PHI1_EXPERIMENT or phi1)."""
    return (experiment or experiment_name()) + DATA_SUFFIX


def stage_experiment(stage: str | None, experiment: str | None = None) -> str:
    """The experiment the runs of `stage` go to: the data sibling for `DATA_STAGES`, else
    the experiment itself (default: $PHI1_EXPERIMENT or phi1)."""
    name = experiment or experiment_name()
    return data_experiment_name(name) if stage in DATA_STAGES else name


def setup(experiment: str | None = None, artifact_root: str | Path = DEFAULT_ARTIFACT_ROOT,
          stage: str | None = None) -> str:
    """Point MLflow at our store and the experiment and its data sibling (both created, with
    their artifacts under `artifact_root`, when new), with the HTTP limits of `configure`;
    make the one `stage`'s runs go to active (`stage_experiment`: without a stage, the
    experiment itself) and return its id."""
    name = experiment or experiment_name()
    ids = _setup(name, artifact_root)
    import mlflow

    exp_id = ids[stage_experiment(stage, name)]
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def experiment_ids(experiment: str | None = None) -> list[str]:
    """The ids of the experiment (default: $PHI1_EXPERIMENT or phi1) and of its data
    sibling, created when new (see `setup`): where to search for a project's stage runs."""
    name = experiment or experiment_name()
    return list(_setup(name, DEFAULT_ARTIFACT_ROOT).values())


def _setup(name: str, artifact_root: str | Path) -> dict[str, str]:
    """{experiment name: id} of `name` and its data sibling, created when new."""
    global _lost
    import mlflow

    uri = tracking_uri()
    os.environ.update(_http_env(_settings.http_retries, _settings.http_timeout, _settings.http_backoff))
    _check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        rebase_store(uri)
        note = DATA_NOTE.format(stages=", ".join(sorted(DATA_STAGES)), main=name)
        ids = {name: _experiment(name, uri, artifact_root, {}),
               data_experiment_name(name): _experiment(data_experiment_name(name), uri, artifact_root,
                                                       {"mlflow.note.content": note})}
    except Exception as exc:  # MlflowException, sqlalchemy errors: name the store
        raise TrackingError(f"cannot use MLflow tracking store {uri}: {_reason(exc)}") from None
    _lost = None
    return ids


def _experiment(name: str, uri: str, artifact_root: str | Path, tags: dict[str, str]) -> str:
    """The id of experiment `name`, created (artifacts under `artifact_root`, tagged with
    `tags` and the store's folder) when new."""
    import mlflow
    from mlflow.exceptions import MlflowException

    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location, tags = None, dict(tags)
        if not uri.startswith(("http://", "https://", "databricks")):
            location = Path(artifact_root).resolve().as_uri()
        if db := _sqlite_file(uri):
            tags[STORE_DIR_TAG] = str(db.parent)
        try:
            return mlflow.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as exc:  # another stage created it meanwhile
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or (exp := mlflow.get_experiment_by_name(name)) is None:
                raise
        return exp.experiment_id
    db = _sqlite_file(uri)
    if db and STORE_DIR_TAG not in exp.tags and exp.artifact_location.startswith(db.parent.as_uri() + "/"):
        # made before the tag existed, its artifacts beside the store: from now on it can move
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, STORE_DIR_TAG, str(db.parent))
    return exp.experiment_id


STORE_DIR_TAG = "phi1.store_dir"
"""Experiment tag: the folder that held the local sqlite store when the experiment was
created; `rebase_store` compares it with where the store is now."""

_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
              ("model_versions", "storage_location"), ("logged_models", "artifact_location"),
              ("workspaces", "default_artifact_root"), ("workspaces", "trace_archival_location"),
              ("trace_tags", "value"), ("experiment_tags", "value"))
"""The columns of MLflow's sqlite schema that hold a location (an artifact root, a model's
source, a trace's artifacts), as a file URI or a plain path. A logged dataset's source is
JSON (`{"uri": ...}`): rewritten where its URI begins with the old folder."""


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (relative to the working folder or
    absolute), or None for any other store."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:///:memory:"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).resolve()


def rebase_store(uri: str | None = None) -> dict[str, str]:
    """Make a local sqlite store that was moved or copied with its project point into
    the folder it is in now; return {old folder: new folder} (empty when nothing moved).

    MLflow records absolute locations (an experiment's artifact root, each run's artifact
    URI, a logged model's and a model version's location), so a copied checkout would
    read and write the original's `mlruns/`. The experiments `setup` creates carry the
    store's folder (`STORE_DIR_TAG`); when the store now sits elsewhere, every location
    under the old folder is rewritten to the same place under the new one, in one
    transaction (a plain sqlite3 connection: MLflow has no API to move an experiment or
    a run). Locations outside the old folder are left alone; a store that did not move,
    a remote store or a store without the tag is not touched."""
    import sqlite3

    db = _sqlite_file(uri or tracking_uri())
    if db is None or not db.is_file():
        return {}
    new = str(db.parent)
    con = sqlite3.connect(db, timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiment_tags" not in tables:
            return {}
        olds = {v for (v,) in con.execute("SELECT DISTINCT value FROM experiment_tags WHERE key = ?",
                                           (STORE_DIR_TAG,)) if v != new}
        if not olds:
            return {}
        con.execute("BEGIN IMMEDIATE")  # one writer; a concurrent stage waits, then sees it done
        olds = {v for (v,) in con.execute("SELECT DISTINCT value FROM experiment_tags WHERE key = ?",
                                           (STORE_DIR_TAG,)) if v != new}
        for old in olds:
            for before, after in ((Path(old).as_uri() + "/", Path(new).as_uri() + "/"), (old + "/", new + "/")):
                for table, column in _LOCATIONS:
                    if table in tables:
                        con.execute(f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                                    f'WHERE substr("{column}", 1, ?) = ?',
                                    (after, len(before) + 1, len(before), before))
                if "datasets" in tables:
                    b, a = json.dumps({"uri": before})[:-2], json.dumps({"uri": after})[:-2]  # '{"uri": "<prefix>'
                    con.execute("UPDATE datasets SET dataset_source = ? || substr(dataset_source, ?) "
                                "WHERE substr(dataset_source, 1, ?) = ?", (a, len(b) + 1, len(b), b))
        con.execute("UPDATE experiment_tags SET value = ? WHERE key = ?", (new, STORE_DIR_TAG))
        con.commit()
        return {old: new for old in olds}
    finally:
        con.close()


# --------------------------------------------------------------------------- runs left open


def _pending_path(uri: str) -> Path:
    """The record of runs left open on `uri`, in the user cache (like the promotion lock in
    phi1.engines.model_registry): DVC's temporary experiment workspaces share it."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())  # a relative path: per project
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "phi1" / f"tracking-{hashlib.sha256(uri.rstrip('/').encode()).hexdigest()[:16]}.jsonl"


@contextlib.contextmanager
def _pending(uri: str) -> Iterator[list[dict[str, Any]]]:
    """The open-run records of `uri`, locked against other stages; rewritten from the list on exit."""
    path = _pending_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        entries = []
        for line in fh:
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        try:
            yield entries
        finally:
            fh.seek(0)
            fh.truncate()
            fh.writelines(json.dumps(e) + "\n" for e in entries)


def pending_runs(uri: str | None = None) -> list[dict[str, Any]]:
    """Runs left open on the tracking store (default: this process's), to be ended as FAILED."""
    uri = uri or tracking_uri()
    if not _pending_path(uri).is_file():
        return []
    with _pending(uri) as entries:
        return list(entries)


def _remember(run_id: str, stage: str, reason: str) -> None:
    with _pending(tracking_uri()) as entries:
        entries.append({"run_id": run_id, "stage": stage, "reason": reason, "end_time": int(time.time() * 1000)})


def close_left_open() -> list[str]:
    """End as FAILED the runs that earlier stages could not close on this store; return
    their ids. A server that fails again keeps the rest for next time (TrackingError)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    if not _pending_path(uri).is_file():
        return []
    client = MlflowClient(uri)
    closed: list[str] = []
    failed: BaseException | None = None
    with _pending(uri) as entries:
        for e in list(entries):
            try:
                if client.get_run(e["run_id"]).info.status == "RUNNING":
                    client.set_tag(e["run_id"], "phi1.tracking_failure", e["reason"])
                    client.set_terminated(e["run_id"], "FAILED", end_time=e["end_time"])
                    closed.append(e["run_id"])
            except MlflowException as exc:
                if store_failure(exc):
                    failed = exc
                    break
                # deleted, or in another store under the same URI: nothing left to close
            entries.remove(e)
    if failed is not None:
        raise TrackingError(f"MLflow tracking server {uri} failed closing earlier runs: {_reason(failed)}")
    return closed


@contextlib.contextmanager
def _closing(run: Any, stage: str, wrap: bool) -> Iterator[Any]:
    """End the active run `run` when the block ends: FINISHED, or FAILED on an exception.
    A store failure (in the block or while closing) leaves the run in the open-run record
    when it cannot be closed; `wrap` turns it into one TrackingError naming the URI."""
    global _lost
    import mlflow

    uri, run_id = tracking_uri(), run.info.run_id

    def end(status: str, reason: str) -> bool:
        global _lost
        try:
            with _one_short_try() if _lost else contextlib.nullcontext():
                mlflow.end_run(status)  # pops the run first, then tells the store
                if _lost:  # the server took it after all: say why the run failed
                    with contextlib.suppress(Exception):
                        mlflow.MlflowClient().set_tag(run_id, "phi1.tracking_failure", reason)
            return True
        except Exception as exc:
            failure = store_failure(exc)
            if failure is None:
                raise
            _lost = _lost or _reason(failure)
            _remember(run_id, stage, reason)
            return False

    try:
        yield run
    except BaseException as exc:
        failure = store_failure(exc)
        if failure is None:  # the stage's own error: it is what the user sees
            with contextlib.suppress(Exception):
                end("FAILED", f"stage {stage} failed ({type(exc).__name__}); its run could not be closed")
            raise
        _lost = _lost or _reason(failure)
        reason = f"tracking server {uri} lost during stage {stage}: {_lost}"
        closed = end("FAILED", reason)
        if not wrap:
            raise
        raise TrackingError(_lost_message(uri, stage, run_id, closed)) from None
    else:
        if not end("FINISHED", f"tracking server {uri} lost closing the run of stage {stage}"):
            raise TrackingError(_lost_message(uri, stage, run_id, False)) from None


def _lost_message(uri: str, stage: str, run_id: str, closed: bool) -> str:
    then = "marked FAILED" if closed else "to be marked FAILED by the next stage that reaches the server"
    return f"MLflow tracking server {uri} failed during stage {stage} ({_lost}); its run {run_id} is {then}"


def git_commit(cwd: str | Path = ".") -> tuple[str, bool]:
    """(commit sha or 'unknown', dirty?)"""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd, capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def dvc_lock_hashes(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """path -> md5 of every stage output recorded in dvc.lock."""
    p = Path(lock_path)
    if not p.is_file():
        return {}
    lock = yaml.safe_load(p.read_text()) or {}
    out: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for o in stage.get("outs") or []:
            if "md5" in o:
                out[os.path.normpath(o["path"])] = o["md5"]
    return out


def content_hash(path: str | Path) -> str:
    """md5 over a file, or over the sorted relative paths and contents of a directory."""
    p = Path(path)
    h = hashlib.md5()
    if p.is_file():
        files = [p]
        base = p.parent
    else:
        from phi1.io import MARKER  # not data: DVC ignores it too (.dvcignore)

        files = sorted(q for q in p.rglob("*") if q.is_file() and q.name != MARKER)
        base = p
    for f in files:
        h.update(str(f.relative_to(base)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def input_hashes(inputs: Sequence[str | Path], lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """Hash of each input: `md5:<dvc hash>` (dvc.lock, DVC's own) when the file matches it,
    else `computed:<md5>`."""
    locked = dvc_lock_hashes(lock_path)
    out = {}
    for item in inputs:
        key = os.path.normpath(str(item))
        if not Path(item).exists():
            out[key] = "missing"
        elif key in locked:
            out[key] = f"dvc:{locked[key]}"
        else:
            out[key] = f"computed:{content_hash(item)}"
    return out


@contextlib.contextmanager
def stage_run(
    stage: str,
    cfg: Any = None,
    inputs: Sequence[str | Path] = (),
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run for a stage, logging its config, git commit and input hashes
    (after ending as FAILED the runs earlier stages left open on this store). A tracking
    failure raises TrackingError; see the module docstring."""
    import mlflow

    setup(stage=stage)
    close_left_open()
    sha, dirty = git_commit()
    all_tags = {"phi1.stage": stage, "git.commit": sha, "git.dirty": str(dirty).lower(),
                # MLflow's own lineage fields: its autodetection looks at the entry script,
                # which lives in the (git-ignored) virtualenv, and finds no commit
                "mlflow.source.name": f"phi1 {stage}", "mlflow.source.type": "LOCAL"}
    if sha != "unknown":
        all_tags["mlflow.source.git.commit"] = sha
    hashes = input_hashes(inputs)
    for path, h in hashes.items():
        all_tags[f"data.{path}"] = h
    all_tags.update(variant_tags())
    all_tags.update(tags or {})
    run = _start(stage, lambda: mlflow.start_run(run_name=run_name or stage, tags=all_tags))
    with _closing(run, stage, wrap=True):
        log_inputs(hashes)
        if cfg is not None:
            params = {k: _param_value(v) for k, v in flatten(to_dict(cfg), lists=True).items()}
            mlflow.log_params(params)
            mlflow.log_dict(to_dict(cfg), f"config/{stage}.json")
        yield run
        log_headline(stage, run.info.run_id)


HEADLINES: dict[str, tuple[str, ...]] = {
    "ingest": (r"n_kept", r"n_read"),
    "annotate": (r"n", r"positive_fraction", r"mean_score"),
    "filter": (r"roc_auc", r"f1", r"kept_fraction"),
    "synthesize": (r"textbook\.n", r"exercises\.n"),
    "decontaminate": (r"removed\.[^.]+",),
    "tokenize": (r"(pretrain|finetune)\.train_tokens",),
    "validate": (r"[^.]+\.success",),
    "evaluate": (r"[^.]+\.[^.]+\.(pass_at_1|solution_loss)",),
    "probe": (r"[^.]+\.(pass_rate|solution_loss)", r"emergence\.solution_loss_delta\.mean"),
}
"""The metric keys (regular expressions, whole key) that are a stage's headline figures,
those `phi1 summary` shows; the training stages' headline is their loss curve
(`HEADLINE_SERIES`)."""

HEADLINE_SERIES = ("loss", "val_loss")
"""The per-step training metrics logged as `<stage>/<key>` (pretrain/loss, pretrain/val_loss):
the loss curve."""


def headline_key(stage: str, key: str) -> str:
    """`<stage>/<key>`: the name of a headline metric in MLflow.

    MLflow's run page (Model metrics tab) and experiment charts lay charts out by
    `RunsChartsCardConfig.getBaseChartAndSectionConfigs` (mlflow/server/js/src/
    experiment-tracking/components/runs-charts/runs-charts.types.ts): a key `a/b` goes
    to section `a`, keys without a `/` to "Model metrics"; the named sections come first,
    sorted by name, then "Model metrics" (then "System metrics"), and within a section the
    charts follow the sorted keys. phi1's other keys have no `/` (dots only), so a stage
    run's `<stage>/...` section, its headline, is the first: for a training run the loss
    curve (`<stage>/loss` sorts before `<stage>/val_loss`)."""
    return f"{stage}/{key}"


def log_headline(stage: str, run_id: str) -> dict[str, float]:
    """Log again, as `headline_key(stage, key)`, the metrics of the run that match the
    stage's `HEADLINES`; return them. Called by `stage_run` when the stage's work is done
    (its metrics are logged)."""
    import mlflow

    patterns = [re.compile(p) for p in HEADLINES.get(stage, ())]
    if not patterns:
        return {}
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    picked = {headline_key(stage, k): v for k, v in sorted(metrics.items())
              if "/" not in k and any(p.fullmatch(k) for p in patterns)}
    if picked:
        mlflow.log_metrics(picked)
    return picked


def log_inputs(hashes: dict[str, str]) -> None:
    """Each input as an MLflow dataset input (the run page's Datasets column): its path,
    relative to the project as given, and its DVC hash (or the hash computed here)."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for path, h in hashes.items():
        if h == "missing":
            continue
        kind, _, digest = h.partition(":")  # dvc:<md5>[.dir] or computed:<md5>
        with warnings.catch_warnings():  # a local path: "can be interpreted in multiple ways" (all local)
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(path)
        mlflow.log_input(MetaDataset(source=source, name=path, digest=digest), context="input",
                         tags={"phi1.hash": kind})


@contextlib.contextmanager
def nested_run(run_name: str, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """A child run of the active stage run, tagged like it with the variant (and seed)."""
    import mlflow

    run = _start(run_name, lambda: mlflow.start_run(run_name=run_name, nested=True,
                                                   tags={**variant_tags(), **(tags or {})}))
    with _closing(run, run_name, wrap=False):  # the stage run's _closing names the failure
        yield run


def _start(what: str, start: Any) -> Any:
    global _lost
    try:
        return start()
    except Exception as exc:
        if failure := store_failure(exc):
            _lost = _lost or _reason(failure)
            raise TrackingError(f"MLflow tracking server {tracking_uri()} failed opening the run of "
                                f"{what}: {_reason(failure)}") from None
        raise


def flatten(d: Any, prefix: str = "", *, numbers: bool = False, lists: bool = False,
            empty: bool = False, key: Optional[Callable[[str], str]] = None) -> dict[str, Any]:
    """The one flattener of nested dicts: `{"a": {"b": 1}} -> {"a.b": 1}` (MLflow params,
    metrics and tags; preset diffs).

    prefix: joined to every key with a dot, when not empty.
    numbers: keep only numbers, as floats (what mlflow.log_metrics takes); booleans,
      strings, lists and nulls are left out.
    lists: walk a list that holds a dict too, its indices as keys (else a list is a leaf).
    empty: an empty dict is a leaf (else it leaves no key).
    key: applied to each key part, e.g. `metric_key`.
    """
    out: dict[str, Any] = {}

    def walk(v: Any, at: str) -> None:
        if isinstance(v, dict) and (v or not empty):
            for k, x in v.items():
                part = key(str(k)) if key else str(k)
                walk(x, f"{at}.{part}" if at else part)
        elif lists and isinstance(v, list) and any(isinstance(x, dict) for x in v):
            for i, x in enumerate(v):
                walk(x, f"{at}.{i}")
        elif not numbers:
            out[at] = v
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[at] = float(v)

    walk(d, prefix)
    return out


def metric_key(key: str) -> str:
    """`pass@1` -> `pass_at_1` (MLflow metric names allow no `@`)."""
    return key.replace("@", "_at_")


def numeric_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """`flatten(metrics, numbers=True)` for mlflow.log_metrics, each key behind `prefix`
    as written (`"ckpt."`, with its dot)."""
    return {f"{prefix}{k}": v for k, v in flatten(metrics, numbers=True).items()}


def _param_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


RUN_FIGURES = frozenset({
    "seconds", "stage_seconds", "embed_seconds", "embed_files_per_s", "tokens_per_s", "peak_mem_mb",
    "cached", "resumed_from",
})
"""Metrics keys (at any depth) that differ between two runs of the same commit and params:
timings, throughput, memory, cache hits, resumes. They go to MLflow and stderr, never into a
DVC-tracked metrics file, so a rerun changes no tracked file."""


def split_run_figures(metrics: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics without the RUN_FIGURES keys, those figures flattened as `a.b.key`)."""
    kept: dict[str, Any] = {}
    figures: dict[str, Any] = {}
    for k, v in metrics.items():
        if k in RUN_FIGURES:
            figures[f"{prefix}{k}"] = v
        elif isinstance(v, dict):
            kept[k], inner = split_run_figures(v, f"{prefix}{k}.")
            figures.update(inner)
        else:
            kept[k] = v
    return kept, figures


def report_run_figures(figures: dict[str, Any]) -> None:
    """Log the run-dependent figures to the active MLflow run, as `run.<key>`."""
    import mlflow

    numbers = numeric_metrics(figures)
    if numbers and mlflow.active_run() is not None:
        mlflow.log_metrics({f"run.{k}": v for k, v in numbers.items()})


def tracked_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a stage writes to its DVC metrics file: `metrics` without the run-dependent
    figures, which go to its MLflow run here instead."""
    kept, figures = split_run_figures(metrics)
    report_run_figures(figures)
    return kept


def log_folder(folder: str | Path, artifact_path: str) -> None:
    """mlflow.log_artifacts of an output folder, without phi1's output marker."""
    import mlflow

    from phi1.io import MARKER

    for f in sorted(Path(folder).rglob("*")):
        if f.is_file() and f.name != MARKER:
            sub = f.parent.relative_to(folder).as_posix()
            mlflow.log_artifact(str(f), artifact_path if sub == "." else f"{artifact_path}/{sub}")
