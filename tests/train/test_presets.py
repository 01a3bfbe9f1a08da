import pytest
import torch
from transformers import AutoModelForCausalLM

from phi1.errors import Phi1Error
from phi1.train.presets import build_config, count_params, flops_per_token, peak_flops, resolve_attention


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
