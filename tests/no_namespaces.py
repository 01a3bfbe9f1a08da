"""Run a command where the OS allows no namespaces: a real condition, not a mock.

    proc = run_without_namespaces([sys.executable, "-m", "phi1.cli", ...], capture_output=True, text=True)

The command runs in a fresh user namespace whose namespace limits are 0: the sysctls
user.max_{user,mnt,net,pid,ipc,uts,cgroup,time}_namespaces hold per user namespace and
bind every namespace below it, so there `unshare()` fails with ENOSPC, as on a host whose
administrator set user.max_user_namespaces=0. Root's uids are mapped one to one (every
id of its own namespace), so the guard's drop to a random uid still works; another user
is mapped to itself. Where no user namespace can be made at all, a user who is not root runs the
command as it is (namespaces are unavailable here anyway); root is skipped (exit 77).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Sequence

import pytest

SKIP = 77
LIMITS = ("user", "mnt", "net", "pid", "ipc", "uts", "cgroup", "time")

# Runs as `python -c LAUNCHER CMD...`: fork; the child makes the user namespace, the
# parent writes its uid and gid maps (only the parent namespace may), then the child
# sets the limits (it holds every capability in its own namespace) and execs CMD.
LAUNCHER = r"""
import ctypes, os, sys
LIMITS = %r
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.geteuid(), os.getegid()
made_r, made_w = os.pipe()
mapped_r, mapped_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(made_r); os.close(mapped_w)
    ok = libc.unshare(0x10000000) == 0  # CLONE_NEWUSER
    err = ctypes.get_errno()
    os.write(made_w, b"1" if ok else b"0"); os.close(made_w)
    if not ok:
        if uid == 0:
            print(f"no user namespace as root: {os.strerror(err)}", file=sys.stderr)
            os._exit(77)
        os.execvp(sys.argv[1], sys.argv[1:])  # namespaces are unavailable here already
    if os.read(mapped_r, 1) != b"1":
        os._exit(77)
    for name in LIMITS:
        try:
            with open(f"/proc/sys/user/max_{name}_namespaces", "w") as fh:
                fh.write("0")
        except FileNotFoundError:
            if name in ("user", "mnt", "net", "pid"):
                print(f"this kernel has no user.max_{name}_namespaces", file=sys.stderr)
                os._exit(77)
    os.execvp(sys.argv[1], sys.argv[1:])
os.close(made_w); os.close(mapped_r)
if os.read(made_r, 1) == b"1":
    try:
        if uid == 0:  # every id this namespace has, one to one
            maps = {}
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/self/{name}") as fh:
                    maps[name] = "".join(f"{r.split()[0]} {r.split()[0]} {r.split()[2]}\n" for r in fh if r.strip())
        else:
            with open(f"/proc/{pid}/setgroups", "w") as fh:
                fh.write("deny")
            maps = {"uid_map": f"{uid} {uid} 1", "gid_map": f"{gid} {gid} 1"}
        for name, text in maps.items():
            with open(f"/proc/{pid}/{name}", "w") as fh:
                fh.write(text)
        os.write(mapped_w, b"1")
    except OSError as exc:
        print(f"cannot map the user namespace: {exc}", file=sys.stderr)
        os.write(mapped_w, b"0")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
""" % (LIMITS,)


def run_without_namespaces(cmd: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, **kwargs)` where no namespace can be created; skips the test
    where that condition cannot be made."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], **kwargs)
    if proc.returncode == SKIP:
        pytest.skip(f"cannot make a machine without namespaces here: {proc.stderr}")
    return proc
