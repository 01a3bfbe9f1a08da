"""A real single-node Slurm cluster on this machine: munged, slurmctld and slurmd (Debian
`slurm-wlm` + `munge`, `make sysdeps-cluster`), run as root from one state folder.

    python tests/slurm_cluster.py up [--state .cache/slurm]     # `make slurm`
    export SLURM_CONF=$PWD/.cache/slurm/slurm.conf               # printed by `up`
    phi1 ingest -S ingest.executor=slurm -S ingest.slurm.partition=phi1 -S ingest.tasks=2
    python tests/slurm_cluster.py down [--state .cache/slurm]   # `make slurm-down`

    with slurm_cluster(tmp / "slurm") as cluster:              # the pytest fixture
        os.environ.update(cluster.env)                          # SLURM_CONF for sbatch & co

Everything lives in the state folder: a generated slurm.conf (NodeName=localhost at
127.0.0.1 with this machine's CPUs and memory as `slurmd -C` reports them, partition
`phi1`, no cgroups: proctrack/linuxproc, task/none), a private munge key and socket (so
a system munged, if any, is neither needed nor touched), free TCP ports for slurmctld
and slurmd, state, spool, pid and log files. `up` returns once `sinfo` shows the node
idle (bounded); `down` cancels the cluster's jobs, stops the three daemons by the PIDs
in their pid files and removes the folder. Only the standard library: `make slurm`
runs it before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PARTITION = "phi1"
NODE = "localhost"
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")
DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order


class ClusterError(RuntimeError):
    pass


def _tool(name: str) -> str:
    found = shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)
    if found is None:
        raise ClusterError(f"`{name}` not found; install Slurm and munge with `make sysdeps-cluster` "
                           "(Debian packages slurm-wlm munge)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> str:
    """This machine's `slurmd -C` node line without its name: CPUs=.. Boards=.. RealMemory=.."""
    out = subprocess.run([_tool("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=True).stdout
    first = out.splitlines()[0].split()
    return " ".join(f for f in first if not f.startswith("NodeName="))


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@dataclass
class SlurmCluster:
    state: Path

    @property
    def conf(self) -> Path:
        return self.state / "slurm.conf"

    @property
    def socket(self) -> Path:
        return self.state / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client (sbatch, squeue, sinfo, scancel) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def pidfile(self, daemon: str) -> Path:
        return self.state / f"{daemon}.pid"

    def log(self, daemon: str) -> Path:
        return self.state / "log" / f"{daemon}.log"

    def client(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([_tool(args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 60) -> "SlurmCluster":
        """Write the configuration and start munged, slurmctld and slurmd; return once
        `sinfo` shows the node idle. On any failure everything started is stopped."""
        if os.geteuid() != 0:
            raise ClusterError("a local Slurm cluster must be started as root (slurmd launches the jobs)")
        if self.state.exists() and any(self.state.iterdir()):
            raise ClusterError(f"{self.state} is not empty: a cluster may be running there "
                               f"(stop it with `python tests/slurm_cluster.py down --state {self.state}`)")
        tools = {t: _tool(t) for t in ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sinfo")}
        try:
            self._write_files()
            self._start_munge(tools)
            for daemon in ("slurmctld", "slurmd"):
                extra = ["-N", NODE] if daemon == "slurmd" else []
                self._daemon(daemon, [tools[daemon], "-f", str(self.conf), *extra])
            self._wait_idle(timeout)
        except BaseException:
            self.stop(remove=False)
            raise
        return self

    def _write_files(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)
        for sub in ("munge", "log", "ctld", "spool"):
            (self.state / sub).mkdir(mode=0o700)
        (self.state / "munge").chmod(0o755)  # clients connect to the socket in it
        key = self.state / "munge" / "munge.key"
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as fh:
            fh.write(os.urandom(1024))
        host = socket.gethostname().split(".")[0]
        s = self.state
        self.conf.write_text(f"""\
# Generated by tests/slurm_cluster.py: a single-node cluster on this machine.
ClusterName=phi1
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={s / 'ctld'}
SlurmdSpoolDir={s / 'spool'}
SlurmctldPidFile={self.pidfile('slurmctld')}
SlurmdPidFile={self.pidfile('slurmd')}
SlurmctldLogFile={self.log('slurmctld')}
SlurmdLogFile={self.log('slurmd')}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
MailProg=/bin/true
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 {node_hardware()} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munge(self, tools: dict[str, str]) -> None:
        m = self.state / "munge"
        # --force: munged refuses to run as root without it; our own key and socket.
        self._daemon("munged", [tools["munged"], "--force", f"--socket={self.socket}", f"--key-file={m / 'munge.key'}",
                                f"--pid-file={self.pidfile('munged')}", f"--log-file={self.log('munged')}",
                                f"--seed-file={m / 'munged.seed'}"])
        cred = subprocess.run([tools["munge"], "-n", "-S", str(self.socket)], capture_output=True, timeout=30)
        check = subprocess.run([tools["unmunge"], "-S", str(self.socket)], input=cred.stdout, capture_output=True,
                               timeout=30)
        if cred.returncode or check.returncode:
            raise ClusterError(f"munge does not answer on {self.socket}: "
                               f"{(cred.stderr or check.stderr).decode().strip()}; see {self.log('munged')}")

    def _daemon(self, name: str, argv: list[str], timeout: float = 30) -> None:
        """Run a daemon that forks into the background and wait (bounded) for its pid file."""
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env})
        if proc.returncode:
            raise ClusterError(f"{name} failed to start (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}; see {self.log(name)}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid and alive(pid):
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} did not stay up; see {self.log(name)}")

    def _wait_idle(self, timeout: float) -> None:
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            out = self.client("sinfo", "--noheader", "--nodes", NODE, "--format=%t", timeout=10)
            last = (out.stdout + out.stderr).strip()
            if out.returncode == 0 and last == "idle":
                return
            time.sleep(0.5)
        raise ClusterError(f"the Slurm node did not become idle within {timeout:.0f} s (sinfo: {last!r}); "
                           f"see {self.log('slurmctld')} and {self.log('slurmd')}")

    # ------------------------------------------------------------------ stop

    def pid(self, daemon: str) -> int | None:
        try:
            return int(self.pidfile(daemon).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, remove: bool = True, timeout: float = 30) -> None:
        """Cancel the cluster's jobs, stop its daemons (by their pid files) and, with
        `remove`, delete the state folder. Safe to call on a half-started cluster."""
        if self.pid("slurmctld") and alive(self.pid("slurmctld")):
            with contextlib.suppress(OSError, subprocess.SubprocessError, ClusterError):
                self.client("scancel", "--full", "--user", str(os.geteuid()), timeout=10)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self.client("squeue", "--noheader", timeout=10).stdout.strip():
                    time.sleep(0.2)
        for daemon in DAEMONS:
            pid = self.pid(daemon)
            if pid is None or not alive(pid):
                continue
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and alive(pid):
                    time.sleep(0.1)
                if not alive(pid):
                    break
        if remove:
            shutil.rmtree(self.state, ignore_errors=True)


@contextlib.contextmanager
def slurm_cluster(state: Path, timeout: float = 60) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(Path(state).resolve()).start(timeout)
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start or stop a single-node Slurm cluster on this machine (as root).")
    ap.add_argument("action", choices=("up", "down"), help="up: start munged, slurmctld, slurmd; down: stop them "
                                                           "and remove the state folder")
    ap.add_argument("--state", default=".cache/slurm", help="state folder (default: .cache/slurm)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds to wait for the node to be idle")
    args = ap.parse_args(argv)
    cluster = SlurmCluster(Path(args.state).resolve())
    try:
        if args.action == "down":
            cluster.stop()
            print(f"slurm: stopped; removed {cluster.state}")
            return 0
        cluster.start(args.timeout)
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"slurm: node {NODE} idle in partition {PARTITION}. Point Slurm clients at it:\n"
          f"  export SLURM_CONF={cluster.conf}\n"
          f"  phi1 ingest -S ingest.executor=slurm -S ingest.slurm.partition={PARTITION} -S ingest.tasks=2\n"
          f"stop it with `python tests/slurm_cluster.py down --state {args.state}` (`make slurm-down`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
