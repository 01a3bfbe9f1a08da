import json
import math
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from phi1.tracking import split_run_figures
from phi1.errors import Phi1Error
from phi1 import pretrain
from tests.training_fixtures import pretrain_cfg


OUTS = dict(out="checkpoints/base", state_dir="checkpoints/.state/pretrain", metrics_path="metrics/pretrain.json",
            plots_dir="plots/pretrain")


def _run(tokenized: Path, **kw) -> dict:
    return pretrain.run(pretrain_cfg(**kw), tokens=tokenized / "data/tokens/pretrain", tokenizer=tokenized / "tokenizer",
                        **OUTS)


def test_pretrain_exports_an_hf_model_and_logs_the_run(workdir, tokenized):
    metrics = _run(tokenized, max_steps=30, eval_every=10, checkpoint_every=10, log_model=True)
    # A plain HF directory: AutoModelForCausalLM and AutoTokenizer load it.
    model = AutoModelForCausalLM.from_pretrained("checkpoints/base")
    tok = AutoTokenizer.from_pretrained("checkpoints/base")
    assert type(model).__name__ == "PhiForCausalLM" and model.config.vocab_size == 512
    assert model.config.eos_token_id == tok.eos_token_id == model.config.pad_token_id
    ids = tok("def add(a, b):", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    # It learned: validation loss starts near ln(vocab) and falls.
    on_disk = json.loads(Path("metrics/pretrain.json").read_text())
    assert on_disk == split_run_figures(metrics)[0]  # timings and memory: MLflow only
    assert metrics["first_val_loss"] == pytest.approx(math.log(512), abs=0.3)
    assert metrics["final_val_loss"] < metrics["first_val_loss"] - 0.3
    assert metrics["n_params"] == sum(p.numel() for p in model.parameters())
    assert metrics["steps"] == 30 and metrics["tokens"] == 30 * 8 * 64 and "mfu" not in metrics  # CPU: no peak
    assert metrics["tokens_seen"] == 30 * 8 * 64  # steps x global batch x seq_len
    for name in ("train.csv", "val.csv", "loss.png"):
        assert (Path("plots/pretrain") / name).stat().st_size > 0

    run = mlflow.search_runs(experiment_names=["phi1-test"], filter_string="tags.`phi1.stage` = 'pretrain'",
                             output_format="list", order_by=["start_time DESC"])[0]
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pretrain/val_loss")] == [0, 10, 20, 30]
    assert len(client.get_metric_history(run.info.run_id, "pretrain/loss")) == 15
    assert {"lr", "grad_norm", "tokens_per_s", "peak_mem_mb", "final.final_val_loss"} <= set(run.data.metrics)
    assert run.data.params["model.n_params"] == str(metrics["n_params"])
    assert run.data.params["preset"] == "tiny" and run.data.params["run.world_size"] == "1"
    assert any(k.startswith("data.") and k.endswith("tokens/pretrain") for k in run.data.tags)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/loss.png" in artifacts
    # The logged model loads as a text-generation pipeline, with our pinned requirements.
    logged = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    mine = next(m for m in logged if m.source_run_id == run.info.run_id)
    model_uri = mine.model_uri
    reqs = Path(mlflow.artifacts.download_artifacts(artifact_uri=mine.artifact_location + "/requirements.txt")).read_text()
    assert f"torch=={torch.__version__.split('+')[0]}\n" in reqs and "torchvision" not in reqs  # no `+cpu`
    pipe = mlflow.transformers.load_model(model_uri)
    assert pipe("def f(", max_new_tokens=3)[0]["generated_text"].startswith("def f(")


def test_tokens_from_another_tokenizer_are_refused(workdir, tokenized):
    from phi1.tokenize.stage import train_bpe

    other = train_bpe(iter(["x = 1\n" * 50, "def f():\n    pass\n" * 50]), 300, 1)
    other.save_pretrained("other-tokenizer")
    with pytest.raises(Phi1Error, match="tokenized with another tokenizer .*rerun `phi1 tokenize`"):
        pretrain.run(pretrain_cfg(), tokens=tokenized / "data/tokens/pretrain", tokenizer="other-tokenizer", **OUTS)
    with pytest.raises(Phi1Error, match="has no meta.json; run `phi1 tokenize` first"):
        pretrain.run(pretrain_cfg(), tokens="nowhere", tokenizer=tokenized / "tokenizer", **OUTS)
