import asyncio
import hashlib
import json
import socket

import pytest

from phi1.errors import Phi1Error
from phi1.engines.llm import ChatClient, LLMError
from tests.openai_server import OpenAIServer


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client_for(server_or_url, tmp_path=None, **kw) -> ChatClient:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    kw.setdefault("backoff", 0.01)
    kw.setdefault("progress", False)
    return ChatClient(url, "test-model", api_key_env=kw.pop("api_key_env", None),
                      cache_dir=tmp_path / "cache" if tmp_path else None, **kw)


def _jitter(body) -> float:
    # Later prompts answer sooner, so arrival order differs from input order.
    n = int(body["messages"][0]["content"].split()[-1])
    return 0.002 * (20 - n)


def test_results_come_back_in_input_order(tmp_path):
    prompts = [f"prompt {i}" for i in range(20)]
    with OpenAIServer(delay=_jitter) as server:
        client = client_for(server, tmp_path, concurrency=6)
        answers = client.complete_many([msgs(p) for p in prompts], temperature=0.0)
    assert answers == [f"echo: {p}" for p in prompts]
    assert client.stats.requests_sent == 20 and client.stats.cache_hits == 0
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert all(r["body"]["model"] == "test-model" and r["body"]["temperature"] == 0.0 for r in server.requests)


def test_cache_makes_a_rerun_free(tmp_path):
    batch = [msgs(f"q {i}") for i in range(5)]
    with OpenAIServer() as server:
        first = client_for(server, tmp_path).complete_many(batch, max_tokens=10)
        n_after_first = len(server.requests)
        again = client_for(server, tmp_path)
        second = again.complete_many(batch, max_tokens=10)
        assert len(server.requests) == n_after_first == 5
        assert second == first
        assert again.stats.requests_sent == 0 and again.stats.cache_hits == 5
        # Generation params are part of the key: other params, new requests.
        client_for(server, tmp_path).complete_many(batch[:2], max_tokens=11)
        assert len(server.requests) == 7
    entries = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(entries) == 7
    entry = json.loads(entries[0].read_text())
    key = hashlib.sha256(json.dumps(entry["request"], sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert entries[0].stem == key


@pytest.mark.parametrize("script", [[500, 429], [429, 503]])
def test_retries_then_succeeds(tmp_path, script):
    with OpenAIServer(script=script) as server:
        client = client_for(server, tmp_path, max_retries=3)
        assert client.complete(msgs("hello")) == "echo: hello"
    assert client.stats.retries == 2 and client.stats.requests_sent == 3
    assert len(server.requests) == 3


def test_retries_exhausted_is_one_line_error_naming_the_url(tmp_path):
    with OpenAIServer() as server:
        server.fail_status = 503
        client = client_for(server, tmp_path, max_retries=2)
        with pytest.raises(LLMError) as info:
            client.complete(msgs("hello"))
    msg = str(info.value)
    assert server.base_url + "/chat/completions" in msg and "HTTP 503" in msg and "3 attempts" in msg
    assert "\n" not in msg
    assert len(server.requests) == 3


def test_client_error_is_not_retried(tmp_path):
    with OpenAIServer(script=[401]) as server:
        client = client_for(server, tmp_path, max_retries=5)
        with pytest.raises(LLMError, match="refused the request: HTTP 401"):
            client.complete(msgs("hello"))
    assert len(server.requests) == 1


def test_concurrency_is_bounded(tmp_path):
    with OpenAIServer(delay=0.05) as server:
        client = client_for(server, tmp_path, concurrency=3)
        client.complete_many([msgs(f"p {i}") for i in range(15)])
    assert 2 <= server.max_in_flight <= 3
    assert len(server.requests) == 15


def test_unreachable_endpoint_names_the_url(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago and has nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = client_for(url, tmp_path, max_retries=1)
    with pytest.raises(Phi1Error) as info:
        client.complete_many([msgs("a"), msgs("b")])
    msg = str(info.value)
    assert f"{url}/chat/completions" in msg and "unreachable" in msg and "\n" not in msg
    assert client.stats.retries >= 1


def test_api_key_header_comes_from_the_named_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI1_TEST_KEY", "sk-test-123")
    with OpenAIServer() as server:
        client_for(server, api_key_env="PHI1_TEST_KEY").complete(msgs("a"))
        monkeypatch.delenv("PHI1_TEST_KEY")
        client_for(server, api_key_env="PHI1_TEST_KEY").complete(msgs("b"))
    with_key, without_key = (r["headers"] for r in server.requests)
    assert with_key.get("Authorization") == "Bearer sk-test-123"
    assert "Authorization" not in without_key


def test_interrupted_run_resumes_from_the_cache(tmp_path):
    batch = [msgs(f"p {i}") for i in range(8)]
    def fail_last(body):
        return 500 if body["messages"][0]["content"] == "p 7" else 200

    # One at a time, in order: the last prompt fails for good after the others answered.
    with OpenAIServer(status=fail_last) as server, pytest.raises(LLMError, match="HTTP 500"):
        client_for(server, tmp_path, concurrency=1, max_retries=1).complete_many(batch)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 7
    with OpenAIServer() as healthy:
        client = client_for(healthy, tmp_path)
        answers = client.complete_many(batch)
    assert answers == [f"echo: p {i}" for i in range(8)]
    assert client.stats.cache_hits == 7 and client.stats.requests_sent == 1
    assert [r["body"]["messages"][0]["content"] for r in healthy.requests] == ["p 7"]


def test_identical_requests_are_sent_once_and_usage_is_counted(tmp_path):
    with OpenAIServer() as server:
        client = client_for(server, tmp_path)
        answers = client.complete_many([msgs("same prompt"), msgs("other"), msgs("same prompt")])
        responses = client.respond_many([msgs("other")])
    assert answers == ["echo: same prompt", "echo: other", "echo: same prompt"]
    assert len(server.requests) == 2 and client.stats.requests_sent == 2 and client.stats.cache_hits == 1
    assert responses[0]["choices"][0]["message"]["content"] == "echo: other"
    # usage as the server reports it: prompt words, answer words
    assert client.stats.prompt_tokens == 2 + 1 and client.stats.completion_tokens == 3 + 2


def test_missing_content_is_none(tmp_path):
    with OpenAIServer(answer=lambda body: None) as server:
        assert client_for(server).complete(msgs("x")) is None


def test_works_inside_a_running_event_loop(tmp_path):
    with OpenAIServer() as server:
        client = client_for(server)

        async def caller():
            return client.complete_many([msgs("x"), msgs("y")])

        assert asyncio.run(caller()) == ["echo: x", "echo: y"]
