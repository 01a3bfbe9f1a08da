"""A small real OpenAI-compatible chat server for the tests (the one thing the machine
cannot have is a real LLM API).

    with OpenAIServer() as server:          # 127.0.0.1, a free port, in a thread
        client = ChatClient(server.base_url, "test-model")
        server.requests                     # every request body and headers, in arrival order

It implements POST /v1/chat/completions. The default answer is derived from the prompt
(`answer_for`), so tests know what to expect: a rating request gets {"score": n,
"rationale": ...} with n = sha256(prompt) % 11, any other prompt gets "echo: <prompt>".
`script` makes the next requests fail with given statuses, `status(body)` picks one per
request, `fail_status` fails them all; `delay` holds each request
so that concurrency is observable; `max_in_flight` records the most requests it held at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UNRATEABLE = "UNRATEABLE"
"""A prompt holding this gets an answer that is not a rating."""


def prompt_of(body: dict[str, Any]) -> str:
    return "\n".join(m.get("content", "") for m in body.get("messages", []))


def expected_score(prompt: str) -> int:
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 11


def answer_for(body: dict[str, Any]) -> str:
    prompt = prompt_of(body)
    if UNRATEABLE in prompt:
        return "I would rather not say."
    if "educational value" in prompt:
        n = expected_score(prompt)
        obj = json.dumps({"score": n, "rationale": f"Rated {n} by the test server."})
        # Alternate plain JSON and a fenced block: both are valid answers.
        return obj if n % 2 else f"Here is my rating:\n```json\n{obj}\n```"
    return f"echo: {prompt}"


class OpenAIServer:
    def __init__(
        self,
        answer: Callable[[dict[str, Any]], str | None] = answer_for,
        delay: float | Callable[[dict[str, Any]], float] = 0.0,
        script: list[int] | None = None,
        status: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        self.answer = answer
        self.status = status
        self.delay = delay
        self.script = list(script or [])
        self.fail_status: int | None = None
        """When set, every request gets this status."""
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    status = server.script.pop(0) if server.script else server.fail_status or 200
                    if server.status is not None and status == 200:
                        status = server.status(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    delay = server.delay(body) if callable(server.delay) else server.delay
                    if delay:
                        time.sleep(delay)
                    if self.path != "/v1/chat/completions":
                        self._send(404, {"error": {"message": f"no route {self.path}"}})
                    elif status != 200:
                        self._send(status, {"error": {"message": f"scripted {status}"}}, {"Retry-After": "0"})
                    else:
                        content = server.answer(body)
                        message = {"role": "assistant"} if content is None else {"role": "assistant", "content": content}
                        self._send(200, {
                            "id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": len(prompt_of(body).split()),
                                      "completion_tokens": len((content or "").split())},
                        })
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler
