import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from phi1.errors import Phi1Error
from phi1.engines.training.model_shapes import build_config, count_params, flops_per_token, peak_flops, resolve_attention


@pytest.mark.parametrize(
    "preset, vocab, seq_len, expected",
    [
        ("phi-1", 51200, 2048, 1_418_270_720),      # microsoft/phi-1: 1.42B with its untied head
        ("phi-1-small", 51200, 2048, 356_794_368),  # the paper's 350M model
        ("tiny", 4096, 256, 1_844_992),
    ],
)
def test_preset_parameter_counts_on_meta_device(preset, vocab, seq_len, expected):
    config = build_config(preset, vocab, seq_len)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert type(model).__name__ == "PhiForCausalLM"
    assert count_params(model) == expected
    # The 6N term counts every parameter but the embedding lookup.
    assert flops_per_token(config, 0) == 6 * (expected - vocab * config.hidden_size)


def test_phi1_shape_matches_the_paper():
    c = build_config("phi-1", 51200, 2048)
    head_dim = c.hidden_size // c.num_attention_heads
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, head_dim) == (24, 2048, 8192, 64)
    assert int(head_dim * c.rope_parameters["partial_rotary_factor"]) == 32  # rotary dim 32
    assert c.hidden_act == "gelu_new" and not c.tie_word_embeddings


def test_dropout_overrides_and_special_tokens():
    c = build_config("tiny", 512, 512, dropout=0.1, overrides={"num_hidden_layers": 2}, eos_token_id=0)
    assert c.resid_pdrop == c.embd_pdrop == 0.1
    assert c.num_hidden_layers == 2
    assert c.max_position_embeddings == 512  # grows to the sequence length
    assert c.eos_token_id == c.bos_token_id == c.pad_token_id == 0


def test_bad_preset_or_override_is_a_phi1_error():
    with pytest.raises(Phi1Error, match="unknown model preset 'phi-2'"):
        build_config("phi-2", 512, 64)
    with pytest.raises(Phi1Error, match="not a multiple of num_attention_heads 3"):
        build_config("tiny", 512, 64, overrides={"num_attention_heads": 3})
    with pytest.raises(Phi1Error, match="model_overrides.hidden_sise: not a PhiConfig key"):
        build_config("tiny", 512, 64, overrides={"hidden_sise": 64})


def test_attention_auto_is_sdpa_without_cuda():
    assert resolve_attention("auto") == ("flash_attention_2" if torch.cuda.is_available() else "sdpa")
    assert resolve_attention("eager") == "eager"


def test_peak_flops_lookup():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops("cpu") is None and peak_flops(None) is None


# --------------------------------------------------------------------------- the scale presets (pipelines/)

PAPER_SIZES = {"phi-1": 1_418_270_720, "phi-1-small": 356_794_368}  # codegen's 51200-row (padded) vocabulary


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_scale_preset_model_builds_on_meta_device_at_its_size(name, tmp_path):
    """The model a preset's params describe (pretrain + tokenize sections, as `phi1
    pretrain` reads them) has the paper's shape: ~1.3B for phi-1 (1.42B with the untied
    head of microsoft/phi-1), ~350M for phi-1-small."""
    from phi1.config import load_stage_config
    from phi1.pipeline_presets import use
    from tests.conftest import REPO

    params = tmp_path / "params.yaml"
    params.write_bytes((REPO / "params.yaml").read_bytes())
    use(name, params, REPO / "pipelines")
    cfg = load_stage_config("pretrain", params)
    seq_len = load_stage_config("tokenize", params).seq_len
    config = build_config(cfg.preset, 51200, seq_len, cfg.dropout, cfg.model_overrides)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert count_params(model) == PAPER_SIZES[name]
    assert config.max_position_embeddings == seq_len == 2048
    assert config.resid_pdrop == config.embd_pdrop == config.attention_dropout == 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_shrunken_scale_preset_trains_two_steps(name, workdir, tokenized):
    """The preset's own params, applied with `phi1 preset use`, then shrunk with `-S`
    overrides (tiny model, tiny batch, 2 steps, no bf16 on CPU, no launcher): the same
    CLI commands dvc.yaml runs train two real steps of pretraining and of finetuning."""
    from typer.testing import CliRunner

    from phi1.cli import app
    from tests.conftest import REPO

    runner = CliRunner()
    Path("params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    used = runner.invoke(app, ["preset", "use", name, "--presets", str(REPO / "pipelines")])
    assert used.exit_code == 0, used.output
    tiny = "{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, attention_dropout: 0.1}"
    shrink = ["max_steps=2", "warmup_steps=1", "micro_batch_size=2", "global_batch_size=4", "eval_every=1",
              "eval_batches=1", "checkpoint_every=1", "log_every=1", "mixed_precision='no'", "log_model=false",
              "log_system_metrics=false"]
    pre = runner.invoke(app, ["pretrain", "--tokens", str(tokenized / "data/tokens/pretrain"),
                              "--tokenizer", str(tokenized / "tokenizer"), "--out", "base", "--state", "state-pre",
                              "--metrics", "pre.json", "--plots", "plots-pre",
                              "-S", f"pretrain.model_overrides={tiny}", *[f"--set=pretrain.{s}" for s in shrink]])
    assert pre.exit_code == 0, pre.output
    fine = runner.invoke(app, ["finetune", "--tokens", str(tokenized / "data/tokens/finetune"), "--base", "base",
                               "--out", "phi1", "--state", "state-fine", "--metrics", "fine.json",
                               "--plots", "plots-fine", *[f"--set=finetune.{s}" for s in shrink]])
    assert fine.exit_code == 0, fine.output
    for metrics in ("pre.json", "fine.json"):
        m = json.loads(Path(metrics).read_text())
        assert m["steps"] == 2 and math.isfinite(m["final_val_loss"])
    config = json.loads(Path("phi1/config.json").read_text())
    # the preset's settings reached the model; the shrink only touched the sizes
    assert (config["resid_pdrop"], config["attention_dropout"], config["num_hidden_layers"]) == (0.1, 0.1, 2)
    assert len(list(Path("plots-pre").glob("*.csv"))) == 2
