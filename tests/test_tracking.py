import mlflow
import pytest
import yaml

from phi1.config import FilterConfig
from phi1.tracking import TrackingError, input_hashes, setup, stage_run


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
