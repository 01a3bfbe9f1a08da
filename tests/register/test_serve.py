"""Serving the champion for real: a tiny model pretrained with `log_model: true`,
registered, promoted, then `make serve` (`mlflow models serve --env-manager local`) on
127.0.0.1 with the virtualenv not on PATH; greedy completions repeat, `max_new_tokens` is
honoured, a prompt longer than the context is served."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from phi1.config import RegisterConfig
from phi1.engines import model_registry as registry
from tests.register.test_lineage import register, train_and_log

REPO = Path(__file__).resolve().parents[2]
CFG = RegisterConfig(model_name="phi1", checkpoint="checkpoints/base", base_model_name=None, base_checkpoint=None)
PROMPT = "def add(a, b):"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def served(workdir, tokenized):
    """`make serve` of models:/phi1@champion on a free port; yields its URL, stops it after."""
    train_and_log(tokenized, log_model=True)
    version = register(CFG)["phi1"]["version"]
    decision = registry.promote(CFG, "phi1")
    assert decision.accepted and str(decision.version) == str(version), decision.failing
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
           "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                   if p and os.path.abspath(p) != os.path.abspath(venv_bin))}
    venv = Path(sys.executable).parent.parent
    log = open(workdir / "serve.log", "w")
    # `-o STAMP`: the venv is installed; the test must not reinstall it
    proc = subprocess.Popen(["make", "-s", "-C", str(REPO), "serve", f"VENV={venv}", f"-o{venv}/.phi1-installed",
                             "MODEL=models:/phi1@champion", f"PORT={port}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (workdir / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server not up in 240 s: " + (workdir / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make, mlflow and uvicorn: the group started here
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_champion_served_greedy_repeatable_and_bounded(served, workdir):
    from phi1.engines.generation import complete, load_model

    status, first = _post(f"{served}/invocations", {"inputs": [PROMPT], "params": {"max_new_tokens": 8}})
    assert status == 200, first
    status, second = _post(f"{served}/invocations", {"inputs": [PROMPT], "params": {"max_new_tokens": 8}})
    assert status == 200 and first == second  # greedy by default: the same completion twice
    text = first["predictions"][0]
    # exactly what the checkpoint generates greedily with at most 8 new tokens
    lm = load_model(workdir / "checkpoints/base", device="cpu")
    assert text == complete(lm, [PROMPT], max_new_tokens=8)[0]
    status, short = _post(f"{served}/invocations", {"inputs": [PROMPT], "params": {"max_new_tokens": 2}})
    assert status == 200 and text.startswith(short["predictions"][0]) and len(short["predictions"][0]) < len(text)
    assert short["predictions"][0] == complete(lm, [PROMPT], max_new_tokens=2)[0]
    # a prompt longer than the context is cut from the left, not run past the context
    ctx = lm.model.config.max_position_embeddings
    long = "x = 1\n" * ctx
    assert len(lm.tokenizer(long)["input_ids"]) > ctx
    status, out = _post(f"{served}/invocations", {"inputs": [long], "params": {"max_new_tokens": 4}})
    assert status == 200 and out["predictions"][0] == complete(lm, [long], max_new_tokens=4)[0]
    # as many new tokens as the context holds leave no room for a prompt: refused, not run past it
    status, out = _post(f"{served}/invocations", {"inputs": [PROMPT], "params": {"max_new_tokens": ctx}})
    assert status >= 400 and "max length" in json.dumps(out), (status, out)
