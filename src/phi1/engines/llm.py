"""The LLM seam: one client for any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI,
llama.cpp server), shared by `annotate` and `synthesize`.

    client = ChatClient("http://127.0.0.1:8000/v1", "my-model", cache_dir=".cache/llm")
    answers = client.complete_many([[{"role": "user", "content": "Hi"}], ...], temperature=0.0)
    client.stats  # ChatStats(requests_sent=..., cache_hits=..., retries=...)

`complete_many` sends the message lists concurrently (httpx async, at most `concurrency`
in flight), returns the answers' text in input order, and shows a progress bar on stderr
(`respond_many` returns the whole response objects). Identical requests are sent once.
Each request is retried with exponential backoff on 429, 5xx, connection errors and
timeouts. Every response is written to the cache (one JSON file per request, keyed by
model + messages + generation params, renamed into place atomically) the moment it
arrives, so a rerun costs nothing and an interrupted run resumes where it stopped. An
endpoint still failing after the retries is a one-line `LLMError` naming the URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from phi1.errors import Phi1Error
from phi1.io import atomic_file

Messages = Sequence[dict[str, str]]

# Statuses worth retrying: rate limiting and server-side trouble. Other 4xx (bad key,
# unknown model, bad request) fail the same way every time, so we stop at once.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0


class LLMError(Phi1Error, RuntimeError):
    """The endpoint cannot be reached, or refuses the request."""


@dataclasses.dataclass
class ChatStats:
    """Counters of one client, over all its calls."""

    requests_sent: int = 0
    """HTTP requests sent, retries included."""
    cache_hits: int = 0
    """Completions answered from the cache, without a request."""
    retries: int = 0
    """Requests sent again after a retryable failure."""
    completed: int = 0
    """Completions newly received from the endpoint."""
    prompt_tokens: int = 0
    """Prompt tokens of the new completions, as the endpoint's `usage` reports them."""
    completion_tokens: int = 0
    """Generated tokens of the new completions, as the endpoint's `usage` reports them."""

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class ChatClient:
    """Concurrent, retrying, caching client of an OpenAI-compatible `/chat/completions`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 60.0,
        cache_dir: str | Path | None = None,
        backoff: float = 1.0,
        progress: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.backoff = backoff
        self.progress = progress
        self.stats = ChatStats()

    # ------------------------------------------------------------------ public

    def complete(self, messages: Messages, **params: Any) -> str | None:
        """One completion (see `complete_many`)."""
        return self.complete_many([messages], **params)[0]

    def complete_many(
        self, batch: Sequence[Messages], description: str = "llm", **params: Any
    ) -> list[str | None]:
        """The assistant text of each message list, in input order; None where the
        response carried no message content. `params` (temperature, max_tokens, ...) go
        into each request body and into the cache key."""
        return [_content(r) for r in self.respond_many(batch, description, **params)]

    def respond_many(
        self, batch: Sequence[Messages], description: str = "llm", **params: Any
    ) -> list[dict[str, Any]]:
        """The whole response object of each message list (choices, usage, ...), in input
        order. Identical requests are sent once."""
        payloads = [self._payload(m, params) for m in batch]
        results: list[dict[str, Any] | None] = [None] * len(payloads)
        todo: dict[str, list[int]] = {}  # cache key -> positions asking it
        for i, body in enumerate(payloads):
            cached = self._cache_get(body)
            if cached is not None:
                results[i] = cached
                self.stats.cache_hits += 1
            else:
                todo.setdefault(_key(body), []).append(i)
        if todo:
            bodies = [payloads[idx[0]] for idx in todo.values()]
            done = len(payloads) - sum(map(len, todo.values()))
            fresh = _run_sync(self._fetch_all(bodies, description, done=done, total=len(payloads)))
            for idx, resp in zip(todo.values(), fresh):
                for i in idx:
                    results[i] = resp
        return results  # type: ignore[return-value]

    def cache_key(self, messages: Messages, **params: Any) -> str:
        return _key(self._payload(messages, params))

    # ------------------------------------------------------------------ internals

    def _payload(self, messages: Messages, params: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model, "messages": [dict(m) for m in messages], **params}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _cache_path(self, body: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = _key(body)
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, body: dict[str, Any]) -> dict[str, Any] | None:
        path = self._cache_path(body)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())["response"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry is simply fetched again

    def _cache_put(self, body: dict[str, Any], response: dict[str, Any]) -> None:
        path = self._cache_path(body)
        if path is None:
            return
        with atomic_file(path) as fh:
            json.dump({"request": body, "response": response}, fh)

    async def _fetch_all(
        self, bodies: list[dict[str, Any]], description: str, done: int, total: int
    ) -> list[dict[str, Any]]:
        from phi1.engines.progress import progress_bar

        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers()) as http:
            with progress_bar(total, description, enabled=self.progress) as update:
                update(done)

                async def one(body: dict[str, Any]) -> dict[str, Any]:
                    nonlocal done
                    async with sem:
                        resp = await self._post(http, body)
                    self._cache_put(body, resp)
                    self._count(resp)
                    done += 1
                    update(done)
                    return resp

                tasks = [asyncio.ensure_future(one(b)) for b in bodies]
                try:
                    return list(await asyncio.gather(*tasks))
                except BaseException:
                    # First failure stops the run; answers already cached are kept.
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise

    def _count(self, resp: dict[str, Any]) -> None:
        self.stats.completed += 1
        usage = resp.get("usage")
        if isinstance(usage, dict):
            for name in ("prompt_tokens", "completion_tokens"):
                if isinstance(usage.get(name), int):
                    setattr(self.stats, name, getattr(self.stats, name) + usage[name])

    async def _post(self, http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            self.stats.requests_sent += 1
            problem: str
            wait = self.backoff * (2**attempt)
            try:
                r = await http.post(self.url, json=body)
            except httpx.TimeoutException:
                problem = f"timed out after {self.timeout:g}s"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if r.status_code == 200:
                    try:
                        data = r.json()
                    except ValueError:
                        raise LLMError(f"LLM endpoint {self.url} answered with a body that is not JSON") from None
                    if not isinstance(data, dict):
                        raise LLMError(f"LLM endpoint {self.url} answered with JSON that is not an object")
                    return data
                problem = f"HTTP {r.status_code}{_error_detail(r)}"
                if r.status_code not in RETRY_STATUSES:
                    raise LLMError(f"LLM endpoint {self.url} refused the request: {problem}")
                wait = max(wait, _retry_after(r))
            if attempt >= self.max_retries:
                raise LLMError(
                    f"LLM endpoint unreachable at {self.url} after {attempt + 1} attempts: {problem}"
                )
            attempt += 1
            self.stats.retries += 1
            await asyncio.sleep(min(wait, MAX_BACKOFF_S))


def _key(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _content(response: dict[str, Any]) -> str | None:
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _error_detail(r: httpx.Response) -> str:
    text = " ".join(r.text.split())[:200]
    return f" ({text})" if text else ""


def _retry_after(r: httpx.Response) -> float:
    try:
        return float(r.headers.get("retry-after", 0))
    except ValueError:
        return 0.0


def _run_sync(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop
    (a notebook): then in a fresh thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
