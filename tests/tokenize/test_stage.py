import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from phi1.config import ConfigError, TokenizeConfig
from phi1.errors import Phi1Error
from phi1.io import read_table, write_shards
from phi1.engines.training.data import MASK_PAD, MASK_PROMPT, MASK_SOLUTION, TokenShards
from phi1.tokenize import stage
from phi1.tokenize.stage import parse_input, tokenizer_fingerprint, train_bpe

OUTS = dict(tokenizer_out="tokenizer", pretrain_out="data/tokens/pretrain", finetune_out="data/tokens/finetune",
            metrics_path="metrics/tokenize.json")


def run(cfg: TokenizeConfig, pretrain_inputs, finetune_input, **outs) -> dict:
    """The stage writing to dvc.yaml's output paths in the test's root, but for those given."""
    return stage.run(cfg, pretrain_inputs, finetune_input, **{**OUTS, **outs})


def test_tokenizer_is_an_hf_dir_with_endoftext(tokenized):
    tok = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    assert len(tok) == 512
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"
    code = "def f(x):\n    return x ** 2  # ünïcode\n"
    assert tok.decode(tok(code)["input_ids"]) == code  # byte-level: lossless


def test_pretrain_shards_pack_documents_with_eos(tokenized):
    folder = tokenized / "data" / "tokens" / "pretrain"
    meta = json.loads((folder / "meta.json").read_text())
    tok = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    assert meta["seq_len"] == 64 and meta["dtype"] == "uint16" and not meta["has_mask"]
    assert meta["tokenizer"] == tokenizer_fingerprint(tok)
    train, val = TokenShards(folder, "train"), TokenShards(folder, "val")
    s = meta["splits"]
    # 20 files: 10% held out by content hash, whole documents on each side.
    assert (s["train"]["documents"], s["val"]["documents"]) == (18, 2)
    assert len(train) == s["train"]["tokens"] // 64 and len(val) == s["val"]["tokens"] // 64
    all_train = train.tokens(np.arange(len(train))).ravel()
    assert (all_train == tok.eos_token_id).sum() >= 17  # documents joined by <|endoftext|>
    # Each held-out document is in val and not in train.
    text = tok.decode(val.tokens(np.arange(len(val))).ravel())
    held_out = [d for d in read_table(tokenized / "data/codetextbook/filtered")["content"].to_pylist()
                if d[200:300] in text]
    assert len(held_out) == 2
    assert all(d[200:300] not in tok.decode(all_train) for d in held_out)


def test_finetune_masks_prompt_solution_and_padding(tokenized):
    folder = tokenized / "data" / "tokens" / "finetune"
    tok = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    train = TokenShards(folder, "train")
    rows = np.arange(len(train))
    toks, mask = train.tokens(rows), train.mask(rows)
    assert set(np.unique(mask)) == {MASK_PAD, MASK_PROMPT, MASK_SOLUTION}
    assert (toks[mask == MASK_PAD] == tok.eos_token_id).all()
    # Every solution ends with <|endoftext|>, which is a solution (target) token.
    ends = (toks == tok.eos_token_id) & (mask == MASK_SOLUTION)
    meta = json.loads((folder / "meta.json").read_text())
    assert ends.sum() == meta["splits"]["train"]["documents"]
    # Without the padding, the rows are the exercises end to end (long ones span rows):
    # decoding the first two gives back their prompt and solution texts.
    exercises = {(e["prompt"], e["solution"]) for e in read_table(tokenized / "data/codeexercises").to_pylist()}
    stream, smask = toks[mask != MASK_PAD], mask[mask != MASK_PAD]
    ends = np.flatnonzero((stream == tok.eos_token_id) & (smask == MASK_SOLUTION))
    for start, end in ((0, ends[0]), (ends[0] + 1, ends[1])):
        ids, m = stream[start:end], smask[start:end]
        assert (tok.decode(ids[m == MASK_PROMPT]), tok.decode(ids[m == MASK_SOLUTION])) in exercises


def test_missing_listed_input_or_column_is_an_error(workdir, filtered):
    cfg = TokenizeConfig(vocab_size=300, seq_len=16)
    with pytest.raises(Phi1Error, match="tokenize input not found: .*textbook"):
        run(cfg, [(filtered, "content"), (workdir / "data/codetextbook/textbook", "text")], None)
    with pytest.raises(Phi1Error, match="no column 'text'"):
        run(cfg, [(filtered, "text")], None)
    with pytest.raises(Phi1Error, match="tokenize input not found: .*codeexercises"):
        run(cfg, [(filtered, "content")], workdir / "data/codeexercises")
    assert not (workdir / "tokenizer").exists()


def test_several_inputs_and_a_local_tokenizer_dir(workdir, filtered, tokenized):
    textbook = workdir / "textbook"
    textbook.mkdir()
    write_shards(textbook, [{"text": f"Section {i}: loops.\n```python\nfor i in range({i}):\n    print(i)\n```\n" * 20}
                            for i in range(5)])
    cfg = TokenizeConfig(tokenizer=str(tokenized / "tokenizer"), seq_len=32, val_fraction=0.2)
    metrics = run(cfg, [(filtered, "content"), (textbook, "text")], None)
    assert metrics["pretrain"]["train_documents"] + metrics["pretrain"]["val_documents"] == 25
    assert metrics["tokenizer_size"] == 512 and "finetune" not in metrics
    meta = json.loads((workdir / "data/tokens/pretrain/meta.json").read_text())
    assert meta["inputs"] == [f"{filtered}:content", f"{textbook}:text"]
    assert json.loads((workdir / "metrics/tokenize.json").read_text())["seq_len"] == 32
    # Same tokenizer, so the same fingerprint as the session's token folders.
    assert meta["tokenizer"] == json.loads((tokenized / "data/tokens/pretrain/meta.json").read_text())["tokenizer"]


def test_bpe_training_is_deterministic(filtered):
    texts = read_table(filtered)["content"].to_pylist()
    a, b = train_bpe(iter(texts), 400, 2), train_bpe(iter(texts), 400, 2)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert len(a) == 400


def test_cli_reads_path_and_column_and_names_a_missing_input(workdir, filtered, tokenized):
    from typer.testing import CliRunner

    from phi1.cli import app

    runner = CliRunner()
    Path("params.yaml").write_text("tokenize: {}\n")
    missing = runner.invoke(app, ["tokenize", "--pretrain-input", f"{filtered}:content",
                                  "--pretrain-input", "data/codetextbook/textbook:text"])
    assert missing.exit_code == 2
    assert "error: tokenize input not found: data/codetextbook/textbook" in missing.output
    ok = runner.invoke(app, ["tokenize", "-S", f"tokenize.tokenizer={tokenized / 'tokenizer'}", "-S",
                             "tokenize.seq_len=32", "--pretrain-input", f"{filtered}:content",
                             "--finetune-input", str(tokenized / "data/codeexercises")])
    assert ok.exit_code == 0, ok.output
    meta = json.loads((workdir / "data/tokens/finetune/meta.json").read_text())
    assert meta["has_mask"] and meta["seq_len"] == 32


# --------------------------------------------------------------------------- inputs as a param, token budget


def _train_stream(folder: Path) -> np.ndarray:
    train = TokenShards(folder, "train")
    return train.tokens(np.arange(len(train))).ravel()


def test_pretrain_inputs_come_from_params_and_the_flag_overrides_them(workdir, filtered, tokenized):
    from typer.testing import CliRunner

    from phi1.cli import app

    textbook = workdir / "textbook"
    textbook.mkdir()
    write_shards(textbook, [{"text": f"Chapter {i}: recursion.\n" * 40} for i in range(4)])
    tok = str(tokenized / "tokenizer")
    Path("params.yaml").write_text(
        f"tokenize:\n  tokenizer: {tok}\n  seq_len: 32\n  pretrain_inputs: ['{filtered}:content', '{textbook}:text']\n")
    runner = CliRunner()
    both = runner.invoke(app, ["tokenize", "--finetune-input", str(tokenized / "data/codeexercises")])
    assert both.exit_code == 0, both.output
    meta = json.loads((workdir / "data/tokens/pretrain/meta.json").read_text())
    assert meta["inputs"] == [f"{filtered}:content", f"{textbook}:text"]
    # A bare PATH reads the `content` column; the flag replaces the param's list.
    one = runner.invoke(app, ["tokenize", "--pretrain-input", str(filtered),
                              "--finetune-input", str(tokenized / "data/codeexercises")])
    assert one.exit_code == 0, one.output
    assert json.loads((workdir / "data/tokens/pretrain/meta.json").read_text())["inputs"] == [f"{filtered}:content"]
    # -S takes the YAML list syntax `dvc exp run -S` passes through.
    three = runner.invoke(app, ["tokenize", "-S", f"tokenize.pretrain_inputs=[{textbook}:text]",
                                "--finetune-input", str(tokenized / "data/codeexercises")])
    assert three.exit_code == 0, three.output
    assert json.loads((workdir / "data/tokens/pretrain/meta.json").read_text())["inputs"] == [f"{textbook}:text"]


def test_max_tokens_cuts_the_train_split_to_exactly_the_budget(workdir, filtered, tokenized):
    cfg = TokenizeConfig(tokenizer=str(tokenized / "tokenizer"), seq_len=64, val_fraction=0.1)
    full = run(cfg, [(filtered, "content")], None, pretrain_out="full")["pretrain"]
    stream = _train_stream(Path("full"))
    budget = full["train_tokens"] // 3 + 17  # ends inside a document
    capped = run(dataclasses.replace(cfg, max_tokens=budget), [(filtered, "content")], None,
                 pretrain_out="capped")["pretrain"]
    assert capped["train_tokens"] == budget
    assert capped["train_tokens_before_cap"] == full["train_tokens"] == full["train_tokens_before_cap"]
    assert capped["train_documents_before_cap"] == full["train_documents"] > capped["train_documents"]
    assert capped["train_rows"] == budget // 64 and capped["train_dropped_tail_tokens"] == budget % 64
    # A reproducible sample: the same budget gives the same stream.
    again = run(dataclasses.replace(cfg, max_tokens=budget), [(filtered, "content")], None,
                pretrain_out="again")["pretrain"]
    assert again["train_documents"] == capped["train_documents"]
    assert np.array_equal(_train_stream(Path("capped")), _train_stream(Path("again")))
    assert len(stream) >= len(_train_stream(Path("capped")))
    # The held-out split does not move with the budget.
    assert (capped["val_tokens"], capped["val_documents"]) == (full["val_tokens"], full["val_documents"])
    on_disk = json.loads(Path("metrics/tokenize.json").read_text())["pretrain"]
    assert on_disk["train_tokens"] == budget and on_disk["train_tokens_before_cap"] == full["train_tokens"]


def test_the_cap_samples_every_input_not_the_first_one(workdir, filtered, tokenized):
    """A budget the first input alone could fill still takes documents from the second:
    the cap ranks documents by content hash across inputs, not by input order."""
    rows = read_table(filtered).to_pylist()
    halves = {"first": rows[: len(rows) // 2], "second": rows[len(rows) // 2:]}
    for name, part in halves.items():
        Path(name).mkdir()
        write_shards(name, part)
    cfg = TokenizeConfig(tokenizer=str(tokenized / "tokenizer"), seq_len=64, val_fraction=0.1)
    first = run(cfg, [(Path("first"), "content")], None, pretrain_out="first_only")["pretrain"]
    budget = first["train_tokens"] // 2
    run(dataclasses.replace(cfg, max_tokens=budget), [(Path("first"), "content"), (Path("second"), "content")],
        None, pretrain_out="capped")
    tok = AutoTokenizer.from_pretrained(tokenized / "tokenizer")
    text = tok.decode(_train_stream(Path("capped")).tolist())
    taken = {name: sum(r["content"][:200] in text for r in part) for name, part in halves.items()}
    assert taken["first"] > 0 and taken["second"] > 0, taken


def test_a_budget_the_inputs_cannot_fill_is_an_error_naming_the_shortfall(workdir, filtered, tokenized):
    cfg = TokenizeConfig(tokenizer=str(tokenized / "tokenizer"), seq_len=64, val_fraction=0.1)
    have = run(cfg, [(filtered, "content")], None, pretrain_out="full")["pretrain"]["train_tokens"]
    with pytest.raises(Phi1Error) as info:
        run(dataclasses.replace(cfg, max_tokens=have + 1000), [(filtered, "content")], None, pretrain_out="capped")
    msg = str(info.value)
    assert f"tokenize.max_tokens={have + 1000}" in msg and f"only {have} train tokens (1000 short)" in msg
    assert f"{filtered}:content" in msg and "\n" not in msg
    assert not Path("capped").exists()  # nothing half-written
    # Exactly what the inputs hold is fine.
    assert run(dataclasses.replace(cfg, max_tokens=have), [(filtered, "content")], None,
               pretrain_out="capped")["pretrain"]["train_tokens"] == have


@pytest.mark.parametrize("item, parsed", [
    ("data/raw:content", ("data/raw", "content")),
    ("data/pruned/textbook:text", ("data/pruned/textbook", "text")),
    ("data/raw", ("data/raw", "content")),
    ("C:/data/x", ("C:/data/x", "content")),
])
def test_parse_input(item, parsed):
    path, column = parse_input(item)
    assert (str(path), column) == (str(Path(parsed[0])), parsed[1])


@pytest.mark.parametrize("kw, message", [
    ({"pretrain_inputs": ()}, "tokenize.pretrain_inputs must list at least one"),
    ({"max_tokens": 10, "seq_len": 64}, "tokenize.max_tokens must be >= seq_len (64)"),
])
def test_bad_tokenize_params(kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TokenizeConfig(**kw)
