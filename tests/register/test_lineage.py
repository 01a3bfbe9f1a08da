"""Registry lineage and what serving needs, from a real pretrain run (`log_model: true`):
the version is the training run's logged model (stored once, its run the training run),
its signature carries generation params, its requirements install anywhere, and a
checkpoint no run logged is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from phi1 import pretrain
from phi1.config import RegisterConfig
from phi1.engines import model_registry as registry
from phi1.engines.training import run as training_run
from phi1.errors import Phi1Error
from phi1.register.stage import run as register_stage
from phi1.tracking import content_hash
from tests.training_fixtures import pretrain_cfg

OUTS = dict(out="checkpoints/base", state_dir="checkpoints/.state/pretrain", metrics_path="metrics/pretrain.json",
            plots_dir="plots/pretrain")
CFG = RegisterConfig(model_name="phi1-base", checkpoint="checkpoints/base", base_model_name=None, base_checkpoint=None)


def train_and_log(tokenized: Path, **kw) -> str:
    """A few real pretraining steps that log the model; returns the training run's id."""
    pretrain.run(pretrain_cfg(max_steps=4, eval_every=2, checkpoint_every=2, **kw),
                 tokens=tokenized / "data/tokens/pretrain", tokenizer=tokenized / "tokenizer", **OUTS)
    (run,) = mlflow.search_runs(experiment_names=["phi1-test"], filter_string="tags.`phi1.stage` = 'pretrain'",
                                output_format="list", order_by=["start_time DESC"], max_results=1)
    return run.info.run_id


def register(cfg: RegisterConfig = CFG) -> dict:
    Path("params.yaml").write_text("register: {}\n")
    return register_stage(cfg, "metrics/register.json", "params.yaml", "dvc.lock", None, None, None, None)


@pytest.mark.slow
def test_the_version_is_the_training_runs_logged_model_stored_once(workdir, tokenized):
    train_id = train_and_log(tokenized, log_model=True)
    md5 = content_hash("checkpoints/base")
    assert mlflow.get_run(train_id).data.tags[training_run.CHECKPOINT_TAG] == md5
    assert registry.CHECKPOINT_TAG == training_run.CHECKPOINT_TAG  # the two sides read one tag

    out = register()["phi1-base"]
    c = registry.client()
    mv = c.get_model_version("phi1-base", str(out["version"]))
    assert mv.run_id == train_id  # the source run is the training run, not `register`'s
    logged = [m for e in c.search_experiments() for m in mlflow.search_logged_models(
        experiment_ids=[e.experiment_id], output_format="list")]
    assert [m.source_run_id for m in logged] == [train_id]  # stored once: register logged nothing
    model_id = logged[0].model_id
    assert mv.source == f"models:/{model_id}" and mv.tags["phi1.model_id"] == model_id
    assert mlflow.get_run(train_id).data.tags["phi1.model_id"] == model_id
    assert mv.tags["checkpoint.path"] == "checkpoints/base"

    # A second registration of the same checkpoint is a new version of the same stored model.
    again = c.get_model_version("phi1-base", str(register()["phi1-base"]["version"]))
    assert (again.source, again.run_id) == (mv.source, train_id) and again.version != mv.version

    # What serving needs: greedy defaults within the context, generation params, requirements.
    ctx = json.loads(Path("checkpoints/base/config.json").read_text())["max_position_embeddings"]
    gen = json.loads(Path("checkpoints/base/generation_config.json").read_text())
    assert gen["max_length"] == ctx and gen.get("do_sample", False) is False
    assert json.loads(Path("checkpoints/base/tokenizer_config.json").read_text())["model_max_length"] == ctx

    logged = registry.find_logged_model("checkpoints/base")
    info = mlflow.models.get_model_info(f"models:/phi1-base/{mv.version}")
    params = {p.name: (p.dtype.name, p.default) for p in info.signature.params.params}
    assert params == {"max_new_tokens": ("long", min(128, ctx // 2)), "temperature": ("double", 1.0),
                      "do_sample": ("boolean", False)}
    reqs = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location + "/requirements.txt"))
    lines = [r for r in reqs.read_text().splitlines() if r and not r.startswith("#")]
    names = {r.split("==")[0] for r in lines}
    assert {"torch", "transformers", "accelerate", "safetensors", "tokenizers"} <= names and "torchvision" not in names
    assert not any("+" in r for r in lines), lines  # no `+cpu`: installable on a GPU host too
    assert training_run.pip_requirements() == [r for r in lines if r.split("==")[0] in training_run.SERVING_PACKAGES]
    # that they reach generation is tests/register/test_serve.py's


def test_a_checkpoint_no_training_run_logged_is_a_one_line_error(workdir, tokenized):
    train_and_log(tokenized, log_model=False)
    with pytest.raises(Phi1Error) as err:
        register()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("register: no training run logged the model of checkpoints/base")
    assert "log_model: true" in msg
    assert not registry.client().search_registered_models("name='phi1-base'")  # nothing registered


def test_requirements_carry_no_local_version_tag_and_params_default_to_greedy():
    from importlib.metadata import version

    reqs = training_run.pip_requirements()
    assert [r.split("==")[0] for r in reqs] == list(training_run.SERVING_PACKAGES)
    assert f"torch=={version('torch').split('+')[0]}" in reqs and not any("+" in r for r in reqs)
    sig = training_run.serving_signature(256)
    assert {p.name: p.default for p in sig.params.params} == {"max_new_tokens": 128, "temperature": 1.0,
                                                             "do_sample": False}
    assert training_run.default_max_new_tokens(64) == 32  # at most half the context
