import mlflow
import pytest
import yaml

from phi1.config import FilterConfig
from phi1.tracking import TrackingError, input_hashes, nested_run, setup, stage_run


def test_stage_run_logs_config_commit_and_input_hashes(workdir):
    (workdir / "data").mkdir()
    (workdir / "data" / "a.txt").write_text("hello")
    (workdir / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"x": {"cmd": "x", "outs": [{"path": "data/locked", "md5": "abc.dir"}]}}}
    ))
    (workdir / "data" / "locked").mkdir()
    with stage_run("filter", FilterConfig(), inputs=["data/a.txt", "data/locked"]) as run:
        mlflow.log_metric("m", 1.0)
    got = mlflow.get_run(run.info.run_id)
    assert got.data.params["threshold"] == "0.5"
    assert got.data.tags["phi1.stage"] == "filter"
    assert "git.commit" in got.data.tags
    assert got.data.tags["data.data/locked"] == "dvc:abc.dir"
    assert got.data.tags["data.data/a.txt"].startswith("computed:")
    assert got.info.artifact_uri.startswith((workdir / "mlruns").as_uri())
    assert mlflow.get_tracking_uri().startswith("sqlite:///")
    # MLflow's own lineage fields: the source, its commit, and each input as a dataset
    assert got.data.tags["mlflow.source.name"] == "phi1 filter"
    assert got.data.tags.get("mlflow.source.git.commit") == (
        None if got.data.tags["git.commit"] == "unknown" else got.data.tags["git.commit"])
    inputs = {i.dataset.name: (i.dataset.digest, i.dataset.source_type, {t.key: t.value for t in i.tags})
              for i in got.inputs.dataset_inputs}
    assert inputs["data/locked"] == ("abc.dir", "local", {"mlflow.data.context": "input", "phi1.hash": "dvc"})
    assert inputs["data/a.txt"][0] == got.data.tags["data.data/a.txt"].removeprefix("computed:")
    assert inputs["data/a.txt"][2]["phi1.hash"] == "computed"


def test_stage_run_sets_the_git_commit_of_the_project_not_of_the_entry_script(workdir):
    import subprocess

    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    with stage_run("ingest") as run:
        pass
    assert mlflow.get_run(run.info.run_id).data.tags["mlflow.source.git.commit"] == sha


def test_data_stage_runs_go_to_the_data_sibling_models_and_evaluations_stay(workdir):
    """The MLflow UI lists an experiment's runs without a logged model as evaluation runs
    (see DATA_STAGES): the data stages and register log to `<experiment>-data`; every
    stage of dvc.yaml is one or the other; a search by experiment finds both."""
    from pathlib import Path

    from phi1.report import run_rows
    from phi1.tracking import DATA_STAGES, STORE_DIR_TAG, experiment_ids

    stages = set(yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())["stages"])
    assert stages - DATA_STAGES == {"pretrain", "finetune", "evaluate", "probe"}
    assert DATA_STAGES < stages
    with stage_run("ingest") as data_run:
        pass
    with stage_run("evaluate") as eval_run:
        pass
    main, data = mlflow.get_experiment_by_name("phi1-test"), mlflow.get_experiment_by_name("phi1-test-data")
    assert mlflow.get_run(data_run.info.run_id).info.experiment_id == data.experiment_id
    assert mlflow.get_run(eval_run.info.run_id).info.experiment_id == main.experiment_id
    assert data.artifact_location == main.artifact_location == (workdir / "mlruns").as_uri()
    assert data.tags[STORE_DIR_TAG] == main.tags[STORE_DIR_TAG] == str(workdir)
    assert "phi1-test" in data.tags["mlflow.note.content"]
    assert experiment_ids() == [main.experiment_id, data.experiment_id]
    assert {r["stage"] for r in run_rows()} == {"ingest", "evaluate"}


def test_input_hash_changes_with_content(workdir):
    p = workdir / "f.txt"
    p.write_text("a")
    h1 = input_hashes([p])[str(p)]
    p.write_text("b")
    assert input_hashes([p])[str(p)] != h1


def test_unreachable_tracking_server_names_the_uri(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(TrackingError, match="unreachable at http://127.0.0.1:9"):
        setup()


def test_numeric_metrics_flattens_and_keeps_numbers_only():
    from phi1.tracking import numeric_metrics

    got = numeric_metrics({"a": 1, "b": {"c": 2.5, "d": "x", "e": True, "f": None}, "g": [1]})
    assert got == {"a": 1.0, "b.c": 2.5}
    assert numeric_metrics({"x": {"y": 2}}, "run.") == {"run.x.y": 2.0}


def test_flatten_options():
    from phi1.tracking import flatten, metric_key

    d = {"a": {"pass@1": 1, "s": "x", "e": {}}, "l": [{"b": 2}, 3], "n": [1, 2]}
    assert flatten(d) == {"a.pass@1": 1, "a.s": "x", "l": [{"b": 2}, 3], "n": [1, 2]}
    assert flatten(d, "p", lists=True) == {"p.a.pass@1": 1, "p.a.s": "x", "p.l.0.b": 2, "p.l.1": 3, "p.n": [1, 2]}
    assert flatten(d, empty=True)["a.e"] == {} and flatten({}, empty=True) == {"": {}}
    assert flatten(d, "eval", numbers=True, key=metric_key) == {"eval.a.pass_at_1": 1.0}


def test_runs_are_tagged_with_the_dvc_experiment_or_the_named_variant(workdir, monkeypatch):
    monkeypatch.delenv("PHI1_VARIANT", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    with stage_run("filter") as plain:
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "filtered+textbook")  # what `dvc exp run` sets
    with stage_run("filter") as in_exp:
        pass
    monkeypatch.setenv("DVC_EXP_NAME", "filtered+textbook-seed7")  # one seed of a repeated variant
    with stage_run("filter") as seeded:
        pass
    monkeypatch.setenv("PHI1_VARIANT", "mine")
    with stage_run("filter") as named:
        pass
    tags = {k: mlflow.get_run(r.info.run_id).data.tags for k, r in
            {"plain": plain, "in_exp": in_exp, "seeded": seeded, "named": named}.items()}
    assert "phi1.variant" not in tags["plain"]
    assert tags["in_exp"]["phi1.variant"] == "filtered+textbook" and "phi1.seed" not in tags["in_exp"]
    assert tags["seeded"]["phi1.variant"] == "filtered+textbook" and tags["seeded"]["phi1.seed"] == "7"
    assert tags["named"]["phi1.variant"] == "mine"


def test_exp_names_of_seed_repeats_split_back_into_variant_and_seed():
    from phi1.tracking import exp_name, split_exp_name

    for variant, seed in [("filtered+textbook", 7), ("unfiltered", None), ("a-seedx", 0), ("b-seed1", 12)]:
        assert split_exp_name(exp_name(variant, seed)) == (variant, seed)
    assert split_exp_name("-seed3") == ("-seed3", None)


def test_new_experiment_keeps_artifacts_under_the_given_root(workdir, tmp_path_factory):
    root = tmp_path_factory.mktemp("elsewhere") / "mlruns"
    exp_id = setup("phi1-artifacts-elsewhere", artifact_root=root)
    assert mlflow.get_experiment(exp_id).artifact_location == root.resolve().as_uri()


def test_tracking_params_set_mlflow_http_limits(workdir, monkeypatch):
    from phi1 import tracking
    from phi1.config import ConfigError

    monkeypatch.setattr(tracking, "_settings", tracking._settings)  # restored after the test
    for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(k, "99")  # params.yaml wins over the environment
    (workdir / "params.yaml").write_text(yaml.safe_dump({"tracking": {"http_timeout": 4, "http_retries": 1}}))
    tracking.configure(workdir / "params.yaml")
    setup()
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    got = [v.get() for v in (MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                             MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR)]
    assert got == [4, 1, 1]
    (workdir / "params.yaml").write_text(yaml.safe_dump({"tracking": {"http_retries": 11}}))
    with pytest.raises(ConfigError, match="tracking.http_retries"):
        tracking.configure(workdir / "params.yaml")


def test_a_stage_error_is_not_taken_for_a_lost_server(workdir):
    """The stage's own error, and an error MLflow gives for the request itself (not for
    the server), pass through unchanged; the run is FAILED and nothing is left open."""
    from mlflow.exceptions import MlflowException

    from phi1.tracking import pending_runs

    with pytest.raises(ValueError, match="bad data"):
        with stage_run("filter") as run:
            raise ValueError("bad data")
    assert mlflow.get_run(run.info.run_id).info.status == "FAILED"
    with pytest.raises(MlflowException) as exc:
        with stage_run("filter") as run2:
            mlflow.log_param("p", 1)
            mlflow.log_param("p", 2)  # a param logged twice with another value: refused by the store
    assert not isinstance(exc.value, TrackingError)
    assert mlflow.get_run(run2.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None and pending_runs() == []


# --------------------------------------------------------------------------- headline first


def ui_chart_order(keys: list[str]) -> list[tuple[str, list[str]]]:
    """(section, chart keys) in the order MLflow's run page lays a run's model metrics out:
    `RunsChartsCardConfig.getBaseChartAndSectionConfigs` in mlflow/server/js/src/
    experiment-tracking/components/runs-charts/runs-charts.types.ts (section = the key up to
    its last `/`, "" being "Model metrics"; named sections sorted, then "Model metrics";
    charts by `Array.sort()` of the keys, UTF-16 order, which is Python's for these keys)."""
    sections: dict[str, list[str]] = {}
    for k in sorted(keys):
        if not k.startswith("system/"):
            sections.setdefault(k.rpartition("/")[0], []).append(k)
    named = sorted(s for s in sections if s)
    return [(s, sections[s]) for s in named] + ([("Model metrics", sections[""])] if "" in sections else [])


def test_a_stage_runs_headline_is_its_first_chart_and_a_training_runs_is_the_loss_curve(workdir):
    from phi1.engines.training.track import RunLog

    with stage_run("filter", None) as run:
        mlflow.log_metrics({"accuracy": 0.8, "f1": 0.7, "roc_auc": 0.9, "kept_fraction": 0.5, "n_kept": 5.0})
    got = mlflow.get_run(run.info.run_id).data.metrics
    assert {k: v for k, v in got.items() if "/" in k} == {"filter/f1": 0.7, "filter/kept_fraction": 0.5,
                                                          "filter/roc_auc": 0.9}
    assert ui_chart_order(list(got))[0] == ("filter", ["filter/f1", "filter/kept_fraction", "filter/roc_auc"])

    with stage_run("evaluate", None) as run:
        mlflow.log_metrics({"phi1.humaneval.pass_at_1": 0.1, "phi1.humaneval.n_tasks": 2.0, "base.mbpp.pass_at_1": 0.0})
    assert ui_chart_order(list(mlflow.get_run(run.info.run_id).data.metrics))[0] == (
        "evaluate", ["evaluate/base.mbpp.pass_at_1", "evaluate/phi1.humaneval.pass_at_1"])

    with stage_run("pretrain", None) as run:  # as phi1.engines.training.run logs a run
        log = RunLog(workdir / "state", run_id=run.info.run_id, headline="pretrain")
        log.begin(None)
        for step in (2, 4):
            log.log("train", step, {"epoch": step / 10, "loss": 5.0 - step, "lr": 1e-3, "grad_norm": 1.0})
            log.log("val", step, {"val_loss": 5.5 - step})
        log.close()
        mlflow.log_metrics({"final.best_val_loss": 1.5, "final.steps": 4.0})
    keys = list(mlflow.get_run(run.info.run_id).data.metrics)
    order = ui_chart_order(keys)
    assert order[0] == ("pretrain", ["pretrain/loss", "pretrain/val_loss"]) and order[1][0] == "Model metrics"
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "pretrain/loss")
    assert [(m.step, m.value) for m in history] == [(2, 3.0), (4, 1.0)]
    assert "loss" not in keys and "val_loss" not in keys  # the curve once, not twice
    assert (workdir / "state/train.csv").read_text().splitlines()[0].split(",")[:4] == ["step", "epoch", "loss", "lr"]


@pytest.mark.slow
@pytest.mark.gui
def test_the_mlflow_ui_shows_the_loss_curve_section_first_in_headless_chromium(workdir, tmp_path):
    """The real MLflow UI (its built bundle, in Debian's chromium) on a training run's
    Model metrics tab: the `pretrain` section (2 charts) before "Model metrics". And the
    experiment's Evaluation runs page (GenAI view) lists the evaluate run and its nested
    benchmark run, not a data stage's run (DATA_STAGES: in the experiment's data sibling)."""
    import json
    import os
    import re
    import shutil
    import subprocess

    from phi1.engines.training.track import RunLog
    from tests.mlflow_server import mlflow_server
    from tests.test_report import CHROMIUM_FLAGS

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is required (apt-get install -y chromium)"
    exp_id = setup()
    with stage_run("pretrain", None) as run:
        log = RunLog(workdir / "state", run_id=run.info.run_id, headline="pretrain")
        log.begin(None)
        for step in (2, 4, 6):
            log.log("train", step, {"epoch": step / 10, "loss": 5.0 - step / 2, "lr": 1e-3, "grad_norm": 1.0})
            log.log("val", step, {"val_loss": 5.5 - step / 2})
        log.close()
        mlflow.log_metrics({"final.best_val_loss": 1.5, "final.steps": 6.0})
        # the run's model output, as mlflow.transformers.log_model links it (without weights)
        model = mlflow.initialize_logged_model("phi1", source_run_id=run.info.run_id)
        mlflow.log_outputs([mlflow.entities.LoggedModelOutput(model.model_id, step=6)])
    with stage_run("ingest", None, run_name="ingest-run-x"):
        mlflow.log_metric("n_kept", 3.0)
    with stage_run("evaluate", None, run_name="evaluate-run-x"):
        with nested_run("final/humaneval-x"):
            mlflow.log_metric("pass_at_1", 0.5)
    with mlflow_server(os.environ["MLFLOW_TRACKING_URI"]) as server:
        def page(route: str, profile: str) -> str:
            dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / profile}", "--dump-dom",
                                  f"{server.url}/#/experiments/{route}"], capture_output=True, text=True,
                                 timeout=180).stdout
            return re.sub(r"\|+", "|", re.sub(r"<[^>]+>", "|", re.sub(r"<style[^>]*>.*?</style>", "", dom, flags=re.S)))

        text = page(f"{exp_id}/runs/{run.info.run_id}/model-metrics", "profile")
        evals = page(f"{exp_id}/evaluation-runs?workflowType=genai", "profile-evals")
    # a row: "|<run name>|Eval|<started>|..."; the training run (it logged a model) is not one
    assert "|evaluate-run-x|Eval|" in evals and "final/humaneval-x" in evals, evals[-3000:]
    assert "ingest-run-x" not in evals and "|pretrain|Eval|" not in evals, evals[-3000:]
    # the accordion's headers: "<section>|(<number of charts>)|Add chart"
    sections = re.findall(r"\|([^|]+)\|\((\d+)\)\|Add chart", text)
    assert sections[:2] == [("pretrain", "2"), ("Model metrics", "5")], json.dumps(sections)


# --------------------------------------------------------------------------- a moved store


def test_a_copied_store_is_rebased_onto_its_new_folder_once(workdir, tmp_path_factory):
    import json
    import shutil
    import sqlite3

    from phi1.tracking import STORE_DIR_TAG, rebase_store

    from phi1.tracking import log_inputs

    with stage_run("ingest", None) as run:
        mlflow.log_text("x", "a.txt")
        log_inputs({str(workdir / "data.txt"): "computed:abc"})  # a dataset named by its absolute path
    old_uri = mlflow.get_run(run.info.run_id).info.artifact_uri
    assert old_uri.startswith(workdir.as_uri() + "/mlruns/")
    copy = tmp_path_factory.mktemp("moved") / "copy"
    shutil.copytree(workdir, copy)
    assert rebase_store(f"sqlite:///{workdir / 'mlflow.db'}") == {}  # the original did not move
    with sqlite3.connect(copy / "mlflow.db") as con:
        (uri,) = con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run.info.run_id,)).fetchone()
    assert uri == old_uri  # a copy still points into the original until a phi1 command opens it
    assert rebase_store(f"sqlite:///{copy / 'mlflow.db'}") == {str(workdir): str(copy)}
    with sqlite3.connect(copy / "mlflow.db") as con:
        (uri,) = con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run.info.run_id,)).fetchone()
        (loc, tag) = con.execute("SELECT e.artifact_location, t.value FROM experiments e JOIN experiment_tags t "
                                 "ON t.experiment_id = e.experiment_id AND t.key = ?", (STORE_DIR_TAG,)).fetchone()
        (source,) = con.execute("SELECT dataset_source FROM datasets").fetchone()
    assert uri == old_uri.replace(workdir.as_uri(), copy.as_uri()) and loc == (copy / "mlruns").as_uri()
    assert tag == str(copy) and json.loads(source) == {"uri": str(copy / "data.txt")}
    assert rebase_store(f"sqlite:///{copy / 'mlflow.db'}") == {}
    with sqlite3.connect(workdir / "mlflow.db") as con:  # the original's store is untouched
        assert con.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run.info.run_id,)).fetchone() == (
            old_uri,)


def test_a_shared_store_used_from_another_folder_is_not_rebased(workdir, tmp_path_factory, monkeypatch):
    """A store named by an absolute URI from elsewhere (the training tests' shared store, a
    DVC queue's temp workspace) did not move: its locations stay as they are."""
    from phi1.tracking import rebase_store

    with stage_run("ingest", None) as run:
        pass
    before = mlflow.get_run(run.info.run_id).info.artifact_uri
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    with stage_run("ingest", None):
        pass
    assert rebase_store() == {} and mlflow.get_run(run.info.run_id).info.artifact_uri == before
