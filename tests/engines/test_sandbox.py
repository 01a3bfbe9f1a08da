"""The sandbox: verdicts, limits, and one test per attack. After each attack the harness
and its workers are alive, the verdict is right, and no process or temp dir is left."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from phi1.engines.sandbox import caller as sandbox_mod
from phi1.engines.sandbox import ExecutionResult, Sandbox, execute
from tests.engines.conftest import alive, leftovers, temp_dirs
from tests.no_namespaces import run_without_namespaces

T = 1.5  # seconds: the timeout of attack programs that never end


@contextlib.contextmanager
def contained(box: Sandbox):
    """Check, around an attack, that the harness, the workers, the pool and the machine
    are as they were."""
    workers = box.worker_pids
    dirs = temp_dirs()
    yield
    assert box.worker_pids == workers and all(alive(p) for p in workers)
    assert leftovers(box) == []
    assert temp_dirs() == dirs
    assert box.run("assert 1 + 1 == 2").passed  # the pool still works


def unprivileged(box: Sandbox) -> None:
    """Programs must not run as root before an attack that only privileges would bound."""
    res = box.run("import os\nassert os.getuid() != 0 and os.geteuid() != 0")
    assert res.passed, res


def plain_python(program: str) -> subprocess.CompletedProcess:
    """The control: the same program without a sandbox."""
    return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=30)


# --------------------------------------------------------------------------- verdicts


def test_verdicts_and_errors(box):
    ok, wrong, raises, syntax = box.map([
        "def f(x):\n    return x + 1\nassert f(1) == 2\n",
        "def f(x):\n    return x\nassert f(1) == 2, 'f(1) is wrong'\n",
        "x = {}\nx['missing']\n",
        "def f(:\n    pass\n",
    ])
    assert ok == ExecutionResult("passed", "", ok.duration, ok.cpu) and ok.passed and ok.duration > 0
    assert wrong.status == "failed" and "AssertionError: f(1) is wrong" in wrong.error
    assert "line 3: assert f(1) == 2" in wrong.error
    assert raises.status == "failed" and raises.error.startswith("KeyError: 'missing'")
    assert syntax.status == "failed" and "SyntaxError" in syntax.error and "line 1" in syntax.error


def test_isolation_is_reported(box):
    assert box.isolation == "namespaces" and box.detail  # the default: namespaces or nothing
    res = box.run(
        "import os\n"
        "assert os.getcwd() == '/tmp'\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "assert sorted(map(int, pids)) == [1, os.getpid()], pids\n"
    )
    assert res.passed, res


def test_each_program_gets_a_fresh_working_directory(box):
    write = "open('marker', 'w').write('x')\nimport tempfile\nopen(tempfile.gettempdir() + '/m2', 'w').write('x')\n"
    check = "import os, tempfile\nassert not os.path.exists('marker')\nassert not os.path.exists(tempfile.gettempdir() + '/m2')\n"
    with contained(box):
        assert box.run(write).passed
        assert box.run(check).passed


def test_file_size_and_open_file_limits(box):
    big = "open('big', 'wb').write(b'x' * (4 << 20))\n"
    many = "fs = [open('f%d' % i, 'w') for i in range(200)]\n"
    with contained(box):
        res = box.run(big, file_bytes=1 << 20)
        assert res.status == "failed" and "File too large" in res.error
        res = box.run(many, max_open_files=32)
        assert res.status == "failed" and "Too many open files" in res.error


def test_execute_uses_a_shared_warm_sandbox():
    assert execute("assert sorted([3, 1, 2]) == [1, 2, 3]").passed
    res = execute("assert sorted([3, 1, 2]) == [3, 2, 1]")
    assert res.status == "failed" and "AssertionError" in res.error


@pytest.mark.parametrize("pipeline", [1, 2])
def test_a_dead_worker_is_replaced(monkeypatch, pipeline):
    monkeypatch.setattr(sandbox_mod, "_PIPELINE", pipeline)  # jobs queued ahead are resent
    with Sandbox(workers=2) as box:
        victim = box.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        results = box.map(["assert True"] * 6)
        assert [r.status for r in results].count("killed") == 1
        assert sum(r.passed for r in results) == 5
        assert victim not in box.worker_pids and all(alive(p) for p in box.worker_pids)
        assert leftovers(box) == []


# --------------------------------------------------------------------------- attacks


def test_fork_bomb(box):
    unprivileged(box)  # RLIMIT_NPROC binds only a non-root uid
    bomb = "import ctypes\nlibc = ctypes.CDLL(None)\nwhile True:\n    libc.fork()\n"
    with contained(box):
        assert box.run("import os\nos.fork()\n").error.startswith("PermissionError: os.fork is disabled")
        res = box.run(bomb, timeout=T, max_processes=16)  # ctypes goes around the guard
        assert res.status == "timeout"


def test_memory_bomb(box):
    bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n"
    with contained(box):
        res = box.run(bomb, timeout=10, memory_bytes=256 << 20)
        assert res.status == "failed" and res.error.startswith("MemoryError")


def test_infinite_loop_that_swallows_exceptions(box):
    loop = "while True:\n    try:\n        pass\n    except BaseException:\n        pass\n"
    with contained(box):
        res = box.run(loop, timeout=T)
        assert res.status == "timeout" and res.duration >= T


def test_sleeping_past_the_timeout(box):
    with contained(box):
        res = box.run("import time\ntime.sleep(60)\n", timeout=T)
        assert res.status == "timeout" and T <= res.duration < 30


@pytest.fixture
def victim():
    """A world-writable folder outside /tmp holding a world-writable file: only the
    read-only filesystem protects them."""
    d = Path(tempfile.mkdtemp(prefix="phi1-victim-", dir="/var/tmp"))
    d.chmod(0o777)
    f = d / "victim.txt"
    f.write_text("original")
    f.chmod(0o666)
    yield f
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def test_deleting_or_writing_outside_the_working_dir(box, victim):
    assert box.isolation == "namespaces", box.detail
    attack = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "done = []\n"
        f"for action in (lambda: os.remove({str(victim)!r}), lambda: libc.unlink({str(victim).encode()!r}) == 0 or 1 / 0,\n"
        f"               lambda: open({str(victim)!r}, 'w').write('owned'),\n"
        f"               lambda: open({str(victim.parent / 'new.txt')!r}, 'w').write('owned')):\n"
        "    try:\n"
        "        action()\n"
        "        done.append(True)\n"
        "    except Exception:\n"
        "        pass\n"
        "assert done, 'nothing written or deleted'\n"
    )
    with contained(box):
        res = box.run(attack)
        assert res.status == "failed" and "nothing written or deleted" in res.error
    assert victim.read_text() == "original"
    assert [p.name for p in victim.parent.iterdir()] == ["victim.txt"]
    assert plain_python(attack).returncode == 0  # the control: without the sandbox it works
    assert not victim.exists() or victim.read_text() == "owned"


def test_reading_a_secret_from_the_parents_environment(monkeypatch):
    secret = "phi1-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("PHI1_TEST_SECRET", secret)
    attack = (
        "import glob, os\n"
        f"secret = {secret!r}\n"
        "found = [k for k, v in os.environ.items() if secret in v]\n"
        f"for path in glob.glob('/proc/*/environ') + ['/proc/{os.getpid()}/environ']:\n"
        "    try:\n"
        "        if secret.encode() in open(path, 'rb').read():\n"
        "            found.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "assert found, 'no secret found'\n"
    )
    with Sandbox(workers=1) as box, contained(box):  # started after the secret was set
        res = box.run(attack)
        assert res.status == "failed" and "no secret found" in res.error
    assert plain_python(attack).returncode == 0


def test_starting_a_subprocess(box):
    spawn = "import subprocess\nassert subprocess.run(['/bin/echo', 'hi'], capture_output=True).stdout == b'hi\\n'\n"
    # Around the guard: a shell that leaves a sleeping process behind.
    background = (
        "import ctypes\n"
        "assert ctypes.CDLL(None).system(b'/bin/sleep 30 & exit 0') == 0\n"
        "raise RuntimeError('started a background process')\n"
    )
    with contained(box):
        res = box.run(spawn)
        assert res.status == "failed" and "subprocess.Popen is disabled" in res.error
        res = box.run(background)
        assert res.status == "failed" and "background process" in res.error
    assert plain_python(spawn).returncode == 0


def test_opening_a_socket_to_localhost(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            accepted.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    attack = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'leak')\n"
        "s.close()\n"
    )
    try:
        with contained(box):
            res = box.run(attack)
            assert res.status == "failed" and "OSError" in res.error
            if box.isolation == "namespaces":
                assert "Network is unreachable" in res.error
        assert accepted == []
        assert plain_python(attack).returncode == 0  # the control reaches the server
        for _ in range(50):
            if accepted:
                break
            stop.wait(0.05)
        assert accepted == [b"leak"]
    finally:
        stop.set()
        thread.join()
        server.close()


def test_listing_the_hosts_network_interfaces(box):
    host = sorted(set(os.listdir("/sys/class/net")) - {"lo"})
    if not host:
        pytest.skip("this machine has no network interface but lo")
    assert box.isolation == "namespaces", box.detail
    attack = (
        "import os\n"
        f"host = {host!r}\n"
        "seen = set()\n"
        "for d in ('/sys/class/net', '/sys/devices/virtual/net'):\n"
        "    try:\n"
        "        seen.update(os.listdir(d))\n"
        "    except OSError:\n"
        "        pass\n"
        "found = [n for n in host if n in seen or os.path.exists('/sys/class/net/' + n)]\n"
        "assert found, 'no host interface'\n"
    )
    with contained(box):
        res = box.run(attack)
        assert res.status == "failed" and "no host interface" in res.error
        assert box.run("import os\nassert os.listdir('/sys/class/net') == ['lo']").passed
    assert plain_python(attack).returncode == 0  # the control sees them


def test_killing_the_parent(box):
    unprivileged(box)
    targets = [os.getpid(), *box.worker_pids]
    attack = (
        "import ctypes, os, signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"targets = {targets!r} + [os.getppid(), 1]\n"
        "killed = [p for p in targets if libc.kill(p, signal.SIGKILL) == 0]\n"
        "try:\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n"
        "except PermissionError:\n"
        "    pass\n"
        "assert killed, 'killed nobody'\n"
    )
    with contained(box):
        res = box.run(attack)
        assert res.status == "failed" and "killed nobody" in res.error


FAKE_PASSES = {
    "sys.exit(0)": "import sys\nsys.exit(0)\n",
    "raise SystemExit": "raise SystemExit\n",
    "exit()": "exit()\n",
    "os._exit(0)": "import os\nos._exit(0)\n",
    "print passed": "print('passed')\n",
    "SIGKILL itself": "import ctypes, os, signal\nctypes.CDLL(None).kill(os.getpid(), signal.SIGKILL)\n",
    "exit from a thread": "import os, threading, time\nthreading.Thread(target=lambda: os._exit(0)).start()\ntime.sleep(5)\n",
    "forge a token": (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, b'P' + os.urandom(16))\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    ),
}


@pytest.mark.parametrize("fake", list(FAKE_PASSES), ids=list(FAKE_PASSES))
def test_exiting_early_to_fake_a_pass(box, fake):
    with contained(box):
        res = box.run(FAKE_PASSES[fake] + "assert False, 'the tests ran'\n", timeout=10)
        assert not res.passed
        if fake != "print passed":  # the others really ended before the tests
            assert "the tests ran" not in res.error


# --------------------------------------------------------------------------- fail closed

WITHOUT_NAMESPACES = """
import json
from phi1.engines.sandbox import NamespacesUnavailable, Sandbox
out = {}
try:
    Sandbox(workers=1)
except NamespacesUnavailable as exc:
    out["refused"] = str(exc)
with Sandbox(workers=1, isolation="auto") as box:
    out["isolation"] = box.isolation
    out["statuses"] = [r.status for r in box.map(["assert 2 * 2 == 4", "assert 2 * 2 == 5", "while True: pass"],
                                                  timeout=1.5)]
print(json.dumps(out))
"""


def test_without_namespaces_only_an_explicit_request_runs_the_guard():
    """On a machine that allows no namespaces (a real one: its namespace limits are 0),
    the default sandbox refuses, saying why and how to allow them; `auto` runs the guard."""
    proc = run_without_namespaces([sys.executable, "-c", WITHOUT_NAMESPACES], capture_output=True, text=True,
                                  timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    refused = out["refused"]
    assert refused.startswith("namespace isolation unavailable: [Errno ")  # the OS error
    assert "to enable it" in refused and "sysctl -w" in refused and "\n" not in refused
    assert out["isolation"] == "guard" and out["statuses"] == ["passed", "failed", "timeout"]
    assert "UNSAFE: no namespace isolation" in proc.stderr  # the guard says so


# --------------------------------------------------------------------------- guard mode


def test_guard_mode_says_so_once_and_still_judges(monkeypatch, caplog):
    monkeypatch.setattr(sandbox_mod, "_warned", False)
    caplog.set_level(logging.WARNING, logger="phi1.engines.sandbox")
    with Sandbox(workers=1, isolation="guard") as box:
        assert box.isolation == "guard"
        ok, bad, slow = box.map(["assert 2 * 2 == 4", "assert 2 * 2 == 5", "while True: pass"], timeout=T)
        assert (ok.status, bad.status, slow.status) == ("passed", "failed", "timeout")
        with Sandbox(workers=1, isolation="guard"):
            pass
    warnings = [r for r in caplog.records if "no namespace isolation" in r.getMessage()]
    assert len(warnings) == 1


def test_guard_mode_kills_what_a_program_leaves_behind():
    daemon = (
        "import ctypes, time\n"
        "libc = ctypes.CDLL(None)\n"
        "if libc.fork() == 0:\n"  # a daemon: new session, parent gone, then sleeps
        "    libc.setsid()\n"
        "    if libc.fork() != 0:\n"
        "        libc._exit(0)\n"
        "    time.sleep(60)\n"
        "    libc._exit(0)\n"
        "time.sleep(0.2)\n"
        "assert False, 'left a daemon'\n"
    )
    dirs = temp_dirs()
    with Sandbox(workers=1, isolation="guard") as box:
        res = box.run(daemon, timeout=10)
        assert res.status == "failed" and "left a daemon" in res.error
        assert leftovers(box) == []
        assert temp_dirs() == dirs


def test_programs_that_end_at_once(box):
    """A program may end before the worker has sent its nonce; that costs nothing."""
    results = box.map(["1 / 0"] * 60 + ["import os\nos._exit(3)"] * 20)
    assert [r.status for r in results] == ["failed"] * 80
    assert all(r.error.startswith("ZeroDivisionError") for r in results[:60])
    assert all(r.error == "exited with status 3 before the tests finished" for r in results[60:])
