"""The continuous emergence measures pinned on hand-made cases: probe solution loss (a
real tiny model before and after a few steps on the references), the paired Student-t
interval against scipy, and API top-k on a character-level case whose ranks are set by
hand."""

from __future__ import annotations

import types

import pytest

from phi1.engines.generation import LoadedModel, load_model
from phi1.probe.emergence import api_names, api_topk, emergence, paired_t, probe_solution_loss, summarize
from phi1.probe.suite import Probe, load_suite
from tests.tiny_model import make_tiny_model
from tests.training_env import one_thread  # noqa: F401  (autouse: one torch thread)


def _three_probes() -> list[Probe]:
    """The shortest reference of each library."""
    probes = load_suite()
    return [min((p for p in probes if p.library == lib), key=lambda p: len(p.reference))
            for lib in ("pygame", "tkinter", "matplotlib")]


def test_a_model_trained_on_the_references_has_a_lower_probe_solution_loss(tmp_path):
    import torch

    probes = _three_probes()
    lm = load_model(make_tiny_model(tmp_path / "m", seed=3, context=2048), device="cpu", dtype="float32")
    before = probe_solution_loss(lm, probes)
    for p in probes:  # per character: the nats over the reference's characters
        assert before[p.id]["chars"] == len(p.reference) and not before[p.id]["truncated"]
        assert before[p.id]["nats_per_char"] == pytest.approx(before[p.id]["nats"] / len(p.reference))

    texts = [lm.tokenizer(p.prompt + p.reference, return_tensors="pt")["input_ids"] for p in probes]
    opt = torch.optim.AdamW(lm.model.parameters(), lr=3e-3)
    lm.model.train()
    for _ in range(8):
        for ids in texts:
            opt.zero_grad()
            lm.model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
    lm.model.eval()
    after = probe_solution_loss(lm, probes)
    assert all(after[p.id]["nats_per_char"] < before[p.id]["nats_per_char"] for p in probes)

    # emergence: trained minus untrained, paired by probe; its mean is the difference of the means
    no_names = {p.id: {"names": 0, "hits": 0} for p in probes}
    summaries = {"base": summarize(probes, before, no_names), "phi1": summarize(probes, after, no_names)}
    em = emergence(probes, ["base", "phi1"], {"base": before, "phi1": after}, summaries)
    d = em["solution_loss_delta"]
    assert (em["base"], em["finetuned"], d["n"]) == ("base", "phi1", 3)
    assert d["mean"] == pytest.approx(summaries["phi1"]["solution_loss"] - summaries["base"]["solution_loss"])
    assert d["mean"] < 0 and d["ci95"]["low"] < d["mean"] < d["ci95"]["high"]
    assert set(em["by_library"]) == {"pygame", "tkinter", "matplotlib"}
    assert em["by_library"]["pygame"]["solution_loss_delta"]["ci95"] is None  # one probe: no interval
    assert summaries["base"]["api_topk"] is None and em["api_topk_delta"] is None  # no names counted


def test_a_reference_cut_by_the_context_is_scored_per_character_of_what_was_scored(tmp_path):
    probe = max(load_suite(libraries=("pygame",)), key=lambda p: len(p.reference))
    lm = load_model(make_tiny_model(tmp_path / "m"), device="cpu", dtype="float32")  # 128 positions
    row = probe_solution_loss(lm, [probe])[probe.id]
    assert row["truncated"] and 0 < row["chars"] < len(probe.reference)
    assert row["nats_per_char"] == pytest.approx(row["nats"] / row["chars"])


def test_paired_t_interval_matches_scipy():
    from scipy import stats

    finetuned = [1.10, 0.95, 1.30, 1.02, 0.88, 1.21]
    base = [1.25, 1.00, 1.31, 1.20, 0.97, 1.24]
    diffs = [f - b for f, b in zip(finetuned, base)]
    got = paired_t(diffs)
    want = stats.ttest_rel(finetuned, base).confidence_interval(0.95)
    assert got["n"] == 6 and got["mean"] == pytest.approx(-0.085)
    assert got["ci95"] == pytest.approx({"low": want.low, "high": want.high})
    assert got["sd"] == pytest.approx(stats.tstd(diffs))
    one = paired_t([0.2])
    assert one["mean"] == 0.2 and one["ci95"] is None and one["note"] == "one probe: no interval"


def test_one_checkpoint_says_there_is_no_difference():
    em = emergence([], ["phi1"], {}, {})
    assert em["solution_loss_delta"] is None and "one checkpoint" in em["note"]


def test_api_names_are_the_attributes_of_chains_rooted_at_the_library_imports():
    prompt = "import tkinter as tk\nfrom tkinter import ttk\n\n\ndef f(root):\n    \"\"\"Doc tk.Label.\"\"\"\n"
    ref = ('    s = "é"; tk.Label(root).pack()\n'   # a 2-byte character before the name: offsets in characters
           "    box = ttk.Combobox(root)\n"
           "    box.current(0)\n"                   # an instance: not a module chain
           "    tk.messagebox.showinfo\n")
    names = api_names(prompt, ref, "tkinter")
    assert [n for _, n in names] == ["Label", "Combobox", "messagebox", "showinfo"]
    assert all(ref[at:at + len(n)] == n for at, n in names)
    assert api_names(prompt, ref, "pygame") == []


class _SetRanks:
    """A causal LM whose next-token logits are fixed by hand: at every position token id v
    scores -v (so token v ranks v-th), except that at `ranks`' positions the target is
    swapped into the rank given."""

    def __init__(self, vocab: int, ranks: dict[int, tuple[int, int]]):
        self.vocab, self.ranks = vocab, ranks
        self.config = types.SimpleNamespace(max_position_embeddings=1024)

    def __call__(self, input_ids, use_cache=False, attention_mask=None):
        import torch

        n = input_ids.shape[1]
        logits = -torch.arange(self.vocab, dtype=torch.float).repeat(n, 1)
        for pos, (target, rank) in self.ranks.items():  # logits at pos predict token pos + 1
            other = int(torch.argsort(logits[pos], descending=True)[rank])
            logits[pos, [target, other]] = logits[pos, [other, target]]
        return types.SimpleNamespace(logits=logits[None])


def _char_tokenizer():
    """A byte-level BPE with no merges: one token per (ASCII) character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["x"], trainers.BpeTrainer(vocab_size=257, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")


def test_api_topk_counts_names_whose_first_token_ranks_in_the_top_k():
    tok = _char_tokenizer()
    prompt = "import pygame\n\n\ndef f(x):\n    \"\"\"Draw.\"\"\"\n"
    ref = "    pygame.init()\n    x.flip()\n    pygame.display.flip()\n"
    probe = Probe(id="pygame/hand", library="pygame", prompt=prompt, reference=ref, check="")
    assert len(tok(prompt + ref)["input_ids"]) == len(prompt + ref)  # one token per character
    names = api_names(prompt, ref, "pygame")
    assert [n for _, n in names] == ["init", "display", "flip"]  # x.flip is not a library chain
    # the token of each name's first character, at position len(prompt) + offset, is
    # predicted by the logits one position earlier: set its rank there
    ranks = {len(prompt) + at - 1: (tok.convert_tokens_to_ids(n[0]), r) for (at, n), r in zip(names, (0, 5, 20))}
    lm = LoadedModel(model=_SetRanks(len(tok), ranks), tokenizer=tok, device="cpu", name="hand")
    assert [api_topk(lm, [probe], k=k)["pygame/hand"]["hits"] for k in (1, 5, 6, 20, 21)] == [1, 1, 2, 2, 3]
    assert api_topk(lm, [probe], k=10)["pygame/hand"] == {"names": 3, "hits": 2}
    summary = summarize([probe], {"pygame/hand": {"nats_per_char": 1.0, "truncated": False}},
                        api_topk(lm, [probe], k=10))
    assert summary["api_topk"] == summary["by_library"]["pygame"]["api_topk"] == pytest.approx(2 / 3)
