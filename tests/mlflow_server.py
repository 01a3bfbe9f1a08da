"""A real `mlflow server` on 127.0.0.1 for the tests that track over HTTP.

    with mlflow_server("sqlite:////tmp/x/mlflow.db", artifacts=tmp / "artifacts", log=tmp / "server.log") as srv:
        os.environ["MLFLOW_TRACKING_URI"] = srv.url      # http://127.0.0.1:<free port>
        srv.kill()                                        # the server going away mid-run
    with mlflow_server(..., port=srv.port):              # ... and coming back at the same URI

The server runs in its own process group (killed with it on exit) on a free port, one
worker; the context manager returns once `/health` answers. With `artifacts` set the
server proxies artifacts (`--artifacts-destination`, served by default): clients upload
and download them over HTTP as `mlflow-artifacts:/...` and never see that folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Optional[Path]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text()[-n:] if self.log and self.log.is_file() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server and its workers (the whole process group); SIGKILL after 30 s."""
        for s in (sig, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, s)
            try:
                self.process.wait(timeout=30)
                return
            except subprocess.TimeoutExpired:
                continue


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Optional[Path | str] = None, log: Optional[Path] = None,
                  start_timeout: float = 240.0, port: Optional[int] = None, args: Sequence[str] = (),
                  env: Optional[dict[str, str]] = None) -> Iterator[MlflowServer]:
    """Start `mlflow server` on `backend_store_uri` (on `port`, else a free one), with
    `args` added and `env` (else ours) as its environment; yield it once /health answers 200.
    `artifacts` is a folder or a URI (s3://bucket/prefix)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        cmd += ["--artifacts-destination", str(artifacts), "--serve-artifacts"]
    cmd += list(args)
    out = open(log, "a") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    server = MlflowServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start on {server.url}:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        server.kill(signal.SIGTERM)
        if log:
            out.close()


@contextlib.contextmanager
def unavailable_server() -> Iterator[str]:
    """A server on 127.0.0.1 whose `/health` answers 200 and every other request 503 (a
    tracking server up but unable to reach its store); yields its URL."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # a POST's body, then answer
            ok = self.path.split("?")[0] == "/health"
            body = b"OK" if ok else b"store unavailable"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
