from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from phi1.errors import Phi1Error
from phi1.engines.training.data import MASK_PROMPT, MASK_SOLUTION, TokenShards
from phi1 import finetune, pretrain
from tests.training_fixtures import finetune_cfg, pretrain_cfg


@pytest.fixture
def base(workdir, tokenized) -> Path:
    pretrain.run(pretrain_cfg(max_steps=20, eval_every=10, checkpoint_every=10, dropout=0.0),
                 tokens=tokenized / "data/tokens/pretrain", tokenizer=tokenized / "tokenizer", out="base",
                 state_dir="state-base", metrics_path="metrics-base.json", plots_dir="plots-base")
    return workdir / "base"


def _finetune(tokenized, base, tag, **kw) -> dict:
    return finetune.run(finetune_cfg(**kw), tokens=tokenized / "data/tokens/finetune", base=base, out=f"phi1-{tag}",
                        state_dir=f"state-{tag}", metrics_path=f"metrics-{tag}.json", plots_dir=f"plots-{tag}")


def test_finetune_starts_from_base_and_exports_the_best_checkpoint(tokenized, base):
    m = _finetune(tokenized, base, "sol", max_steps=12, checkpoint_every=4, eval_every=4)
    assert m["final_val_loss"] < m["first_val_loss"]
    model = AutoModelForCausalLM.from_pretrained("phi1-sol")
    assert (Path("phi1-sol") / "tokenizer.json").is_file()
    # Exported weights are the checkpoint with the lowest validation loss.
    best = m["best_step"]
    assert m["exported_step"] == best and m["best_val_loss"] == min(
        float(r.split(",")[1]) for r in Path("plots-sol/val.csv").read_text().splitlines()[1:] if r.split(",")[0] != "0")
    at_best = load_file(f"state-sol/checkpoint-{best:08d}/model.safetensors")
    assert all(torch.equal(v, at_best[k]) for k, v in model.state_dict().items())
    # It started from base: the first validation loss is base's on this data, far below ln(512).
    assert m["first_val_loss"] < 6.0


def test_loss_on_solution_only_ignores_prompt_tokens(tokenized, base):
    sol = _finetune(tokenized, base, "sol", max_steps=1, eval_every=1, checkpoint_every=1)
    every = _finetune(tokenized, base, "all", max_steps=1, eval_every=1, checkpoint_every=1,
                      loss_on_solution_only=False)
    # Same base model, same validation rows, different target tokens: different losses.
    assert sol["first_val_loss"] != pytest.approx(every["first_val_loss"], rel=1e-3)
    # Recompute both from the exported base directly.
    val = TokenShards(tokenized / "data/tokens/finetune", "val")
    net = AutoModelForCausalLM.from_pretrained(base).eval()
    rows = np.arange(len(val))
    ids, mask = torch.from_numpy(val.tokens(rows)), torch.from_numpy(val.mask(rows))
    with torch.no_grad():
        logp = torch.log_softmax(net(input_ids=ids).logits[:, :-1].float(), -1)
    nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
    for level, got in ((MASK_SOLUTION, sol), (MASK_PROMPT, every)):
        keep = mask[:, 1:] >= level
        assert got["first_val_loss"] == pytest.approx(float(nll[keep].mean()), rel=1e-4)


def test_missing_base_is_a_phi1_error(workdir, tokenized):
    with pytest.raises(Phi1Error, match="base model not found: nope"):
        finetune.run(finetune_cfg(), tokens=tokenized / "data/tokens/finetune", base="nope", out="checkpoints/phi1",
                     state_dir="checkpoints/.state/finetune", metrics_path="metrics/finetune.json",
                     plots_dir="plots/finetune")
    assert not Path("checkpoints/phi1").exists()
