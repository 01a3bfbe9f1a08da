"""The caller's side of the sandbox: a pool of warm workers, and the one-off `execute`.

    with open_sandbox(workers=2) as box:             # fails closed: namespaces or a one-line error
        result = box.run("assert 1 + 1 == 2", timeout=3.0)
        results = box.map(programs, timeout=3.0)     # in parallel, one ExecutionResult each

`Sandbox` starts each worker by the path of `worker.py` (`worker.command()`), sends it
jobs and reads back verdicts over its pipes, keeps `_PIPELINE` jobs queued at each, and
replaces a worker that dies. `open_sandbox` is what the stages use: it turns a missing
isolation or a failed start into a one-line Phi1Error. What the sandbox covers and what
it does not: the docstring of the package (`__init__.py`).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import select
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from phi1.engines.sandbox.worker import HEADER, command, pack_message
from phi1.errors import Phi1Error

DEFAULT_TIMEOUT = 3.0
DEFAULT_MEMORY = 1 << 30
_PIPELINE = 1  # jobs queued at each worker (2 measured no faster on 2 cores; more for slow callers)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionResult:
    """The verdict on one program."""

    status: str
    """passed, failed, timeout or killed."""
    error: str = ""
    """Why it did not pass: the exception (with the program line), the timeout, the signal."""
    duration: float = 0.0
    """Wall-clock seconds the program ran."""
    cpu: float = 0.0
    """CPU seconds (user + system) the program's process and its reaped children used."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (a worker does not start, isolation was required)."""


class NamespacesUnavailable(SandboxError):
    """Namespace isolation was required and the OS allows none here; the message says why
    (the OS error, the sysctls that forbid it) and how to allow it."""


class SandboxUnavailable(Phi1Error):
    """No namespace isolation here and the guard alone was not allowed: nothing untrusted ran."""


def _clean_env(display: Optional[str] = None) -> dict[str, str]:
    """The workers' whole environment: nothing inherited from the caller but the locale
    (and, under the GUI policy, the display and SDL's headless drivers)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",  # set and dict order of str keys, the same on every run
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # BLAS thread pools would hit the process limit
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if display is not None:
        # SDL (pygame) renders offscreen without any X server; Tk needs the display.
        env.update(DISPLAY=display, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy",
                   PYGAME_HIDE_SUPPORT_PROMPT="1", MPLBACKEND="Agg")
    return env


class _Worker:
    """One warm worker process and its length-prefixed JSON pipe."""

    def __init__(self, isolation: str, display: Optional[str] = None, preload: Sequence[str] = ()):
        self.proc = subprocess.Popen(
            command(isolation, display, preload), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=_clean_env(display), cwd="/", close_fds=True,
        )
        self.buf = b""
        hello = self.recv(60.0)
        if hello is None or "error" in hello:
            self.kill()
            if hello and hello.get("unavailable"):
                raise NamespacesUnavailable(hello["error"])
            why = hello["error"] if hello else "it exited at start"
            raise SandboxError(f"sandbox worker did not start: {why}")
        self.hello = hello

    def send(self, obj) -> None:
        self.proc.stdin.write(pack_message(obj))
        self.proc.stdin.flush()

    def _read(self, n: int, deadline: float) -> Optional[bytes]:
        fd = self.proc.stdout.fileno()
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout: float):
        deadline = time.monotonic() + timeout
        head = self._read(HEADER.size, deadline)
        if head is None:
            return None
        body = self._read(HEADER.unpack(head)[0], deadline)
        return None if body is None else json.loads(body)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the worker returns from its loop
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


_warned = False


class Sandbox:
    """A pool of warm workers; `map` runs programs in parallel, one process each."""

    def __init__(self, workers: Optional[int] = None, isolation: str = "namespaces",
                 display: Optional[str] = None, preload: Sequence[str] = ()):
        """`isolation`: namespaces (the default: raise NamespacesUnavailable where the OS
        allows none), auto (namespaces where possible, else the guard only: UNSAFE, logged
        once) or guard (the guard only, never namespaces: UNSAFE).

        `display` (e.g. ":7") is the GUI policy: programs may talk to that X server
        through its unix socket /tmp/.X11-unix/X7 (bound read-only into their private
        /tmp; no network, so only that socket), and get SDL's headless video and audio
        drivers; everything else stays as strict. `preload`: extra modules each worker
        imports once (e.g. pygame, tkinter) so a program does not pay for them."""
        if isolation not in ("auto", "namespaces", "guard"):
            raise ValueError(f"isolation must be auto, namespaces or guard, got {isolation!r}")
        n = len(os.sched_getaffinity(0)) if workers is None else workers
        if n < 1:
            raise ValueError("workers must be >= 1")
        self._mode = isolation
        self._display = display
        self._preload = tuple(preload)
        self._lock = threading.Lock()
        self._workers = [None] * n
        threads = [threading.Thread(target=self._start, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        failed = [w for w in self._workers if isinstance(w, BaseException)]
        if failed:
            self.close()
            raise failed[0]
        hello = self._workers[0].hello
        self.isolation: str = hello["isolation"]
        """namespaces or guard: what this machine allowed."""
        self.detail: str = hello["detail"]
        """What the isolation covers here, or why namespaces were not used."""
        global _warned
        if self.isolation != "namespaces" and not _warned:
            _warned = True
            _log.warning("phi1 sandbox: UNSAFE: no namespace isolation (%s); running untrusted "
                         "programs with the guard, limits and uid drop only", self.detail)

    def _start(self, i: int) -> None:
        try:
            self._workers[i] = _Worker(self._mode, self._display, self._preload)
        except BaseException as exc:  # reported by __init__
            self._workers[i] = exc

    @property
    def workers(self) -> int:
        return len(self._workers)

    @property
    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if isinstance(w, _Worker)]

    def run(self, program: str, timeout: float = DEFAULT_TIMEOUT,
            memory_bytes: int = DEFAULT_MEMORY, **limits) -> ExecutionResult:
        return self.map([program], timeout, memory_bytes, **limits)[0]

    def map(
        self,
        programs: Sequence[str],
        timeout: float = DEFAULT_TIMEOUT,
        memory_bytes: int = DEFAULT_MEMORY,
        file_bytes: int = 16 << 20,
        tmp_bytes: int = 64 << 20,
        max_processes: int = 16,
        max_open_files: int = 64,
        progress: Optional[Callable[[int], None]] = None,
        cpu_timeout: Optional[float] = None,
    ) -> list[ExecutionResult]:
        """Run every program (in parallel, across the workers); results in input order.

        `timeout` is wall-clock seconds; `cpu_timeout` CPU seconds (default int(timeout) + 2):
        a program over either is a timeout. `progress(n)` is called with the number of
        programs finished so far."""
        if timeout <= 0 or memory_bytes <= 0 or (cpu_timeout is not None and cpu_timeout <= 0):
            raise ValueError("timeout, cpu_timeout and memory_bytes must be positive")
        limits = dict(timeout=float(timeout), memory_bytes=int(memory_bytes),
                      file_bytes=int(file_bytes), tmp_bytes=int(tmp_bytes),
                      max_processes=int(max_processes), max_open_files=int(max_open_files))
        if cpu_timeout is not None:
            limits["cpu_timeout"] = float(cpu_timeout)
        results: list[Optional[ExecutionResult]] = [None] * len(programs)
        todo = iter(range(len(programs)))
        done = [0]
        take = threading.Lock()

        def drain(slot: int) -> None:
            # Keep _PIPELINE jobs queued at the worker (with 2+, it need not wait for this thread).
            inflight: collections.deque[int] = collections.deque()
            while True:
                while len(inflight) < _PIPELINE:
                    with take:
                        i = next(todo, None)
                    if i is None:
                        break
                    inflight.append(i)
                    self._send(slot, programs[i], limits)
                if not inflight:
                    return
                i = inflight.popleft()
                out = self._recv(slot, limits["timeout"])
                if out is None:  # the worker died running job i: replace it, resend the rest
                    results[i] = ExecutionResult("killed", "the sandbox worker died; restarted it")
                    self._restart(slot)
                    for j in inflight:
                        self._send(slot, programs[j], limits)
                else:
                    results[i] = ExecutionResult(out["status"], out.get("error", ""), out.get("duration", 0.0),
                                                 out.get("cpu", 0.0))
                with take:
                    done[0] += 1
                    if progress is not None:
                        progress(done[0])

        with self._lock:  # one map at a time per pool; each worker runs one program at a time
            threads = [threading.Thread(target=drain, args=(s,), daemon=True)
                       for s in range(min(self.workers, len(programs)))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return results  # type: ignore[return-value]

    def _send(self, slot: int, program: str, limits: dict) -> None:
        try:
            self._workers[slot].send({"program": program, **limits})
        except (OSError, ValueError):
            pass  # a dead worker: the next receive notices

    def _recv(self, slot: int, timeout: float):
        try:
            # The worker enforces the timeout; this deadline only catches a stuck worker.
            return self._workers[slot].recv(timeout + 60.0)
        except (OSError, ValueError):
            return None

    def _restart(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = _Worker(self._mode, self._display, self._preload)

    def close(self) -> None:
        for w in self._workers:
            if isinstance(w, _Worker):
                w.close()
        self._workers = []

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_default: Optional[Sandbox] = None
_default_lock = threading.Lock()


def execute(program: str, timeout: float = DEFAULT_TIMEOUT,
            memory_bytes: int = DEFAULT_MEMORY, **limits) -> ExecutionResult:
    """Run one program in a shared one-worker sandbox (started on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            import atexit

            _default = Sandbox(workers=1)
            atexit.register(_default.close)
        box = _default
    return box.run(program, timeout, memory_bytes, **limits)


def open_sandbox(workers: Optional[int] = None, *, unsafe_guard: bool = False, param: Optional[str] = None,
                 display: Optional[str] = None, preload: Sequence[str] = ()) -> Sandbox:
    """A Sandbox that fails closed; a start-up failure is a one-line Phi1Error.

    Programs run under namespace isolation only: where the OS allows none, this raises
    SandboxUnavailable (the OS error, how to enable namespaces, how to opt out) unless
    `unsafe_guard` allows the in-process guard alone. `param` names the params key that
    sets `unsafe_guard` (e.g. `evaluate.unsafe_guard`) in that message."""
    try:
        return Sandbox(workers=workers, isolation="auto" if unsafe_guard else "namespaces",
                       display=display, preload=preload)
    except NamespacesUnavailable as exc:
        opt_out = "--unsafe-guard" + (f" (or set {param}: true)" if param else "")
        raise SandboxUnavailable(
            f"sandbox: {exc}; nothing was run. To run the untrusted code without isolation "
            f"anyway (UNSAFE: the in-process guard only), pass {opt_out}"
        ) from None
    except (SandboxError, ValueError) as exc:
        raise Phi1Error(f"sandbox: {exc}") from None


def check_limits(timeout: float, workers: int | None, memory_bytes: int) -> None:
    """The sandbox limits a user gives on the command line, checked before any work."""
    if not timeout > 0:
        raise Phi1Error(f"--timeout must be a positive number of seconds, got {timeout}")
    if workers is not None and workers < 1:
        raise Phi1Error(f"--workers must be >= 1 (or left out: one per CPU core), got {workers}")
    if memory_bytes < 1:
        raise Phi1Error(f"--memory-bytes must be positive, got {memory_bytes}")
