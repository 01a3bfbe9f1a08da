"""Real PostgreSQL and S3 servers on 127.0.0.1 for the team-setup tests (`-m cluster`).

    with postgres_cluster() as pg, s3_server(tmp / "moto.log") as s3:
        pg.url("mlflow")               # postgresql://postgres@127.0.0.1:<port>/mlflow
        s3.endpoint, s3.env            # http://127.0.0.1:<port>, AWS_* for any S3 client
        s3.client().list_objects_v2(Bucket="b")

PostgreSQL is Debian's `postgresql` package (`make sysdeps-cluster`): a throwaway cluster
made by `initdb` in a fresh folder under /tmp and started by `pg_ctl` on a free port of
127.0.0.1 (and a unix socket in that folder), with trust authentication for the user
`postgres` and durability off (fsync, synchronous_commit: a test cluster). PostgreSQL
refuses to run as root, so as root both run as the `postgres` user (`runuser`); the
folder is not pytest's tmp_path, which only root may enter. S3 is moto's server
(`moto_server`, PyPI `moto[server]`) in its own process group, any access key accepted.
Every start waits a bounded time; leaving the context stops the server (PostgreSQL:
`pg_ctl stop -m immediate`) and removes its folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx

from tests.mlflow_server import free_port

BIN = Path(sys.executable).parent


class ServiceError(RuntimeError):
    pass


# --------------------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise ServiceError("PostgreSQL's initdb not found under /usr/lib/postgresql/*/bin; install the "
                           "Debian package postgresql (`make sysdeps-cluster`)")
    return Path(found[-1]).parent


def _server_user() -> Optional[str]:
    """The user to run PostgreSQL as: None (ourselves) unless we are root, then `postgres`
    (Debian's package makes it), else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServiceError("running as root and no `postgres` or `nobody` user to run PostgreSQL as")


@dataclass
class Postgres:
    root: Path
    port: int
    bin: Path
    user: Optional[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program (initdb, pg_ctl) as the server's user; its output is
        captured (the server itself writes to `log`, so no pipe stays open)."""
        argv = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              stdin=subprocess.DEVNULL)

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def query(self, database: str, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), connect_timeout=10) as conn:
            return conn.execute(sql, params or None).fetchall()


@contextlib.contextmanager
def postgres_cluster(timeout: float = 60) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1:<free port>; stopped and removed on exit."""
    user = _server_user()
    pg = Postgres(Path(tempfile.mkdtemp(prefix="phi1-pg-")), free_port(), pg_bin(), user)
    if user:
        shutil.chown(pg.root, user)
    started = False
    try:
        done = pg.ctl("initdb", "-D", str(pg.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--locale=C", "--no-sync", "--no-instructions", timeout=timeout)
        if done.returncode:
            raise ServiceError(f"initdb failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
        options = (f"-h 127.0.0.1 -p {pg.port} -k {pg.root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off")
        done = pg.ctl("pg_ctl", "-D", str(pg.data), "-l", str(pg.log), "-o", options, "-w", "-t", str(int(timeout)),
                      "start", timeout=timeout + 10)
        started = True
        if done.returncode:
            raise ServiceError(f"pg_ctl start failed (exit {done.returncode}): {done.stderr.strip()[-300:]}\n"
                               f"{pg.log_tail()}")
        yield pg
    finally:
        if started:
            pg.ctl("pg_ctl", "-D", str(pg.data), "-m", "immediate", "-w", "-t", "30", "stop", timeout=40)
        shutil.rmtree(pg.root, ignore_errors=True)


# --------------------------------------------------------------------------- S3 (moto)


@dataclass
class S3:
    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """What an S3 client (boto3, s3fs, DVC, an MLflow server) needs to use this endpoint."""
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        e = self.env
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=e["AWS_DEFAULT_REGION"],
                            aws_access_key_id=e["AWS_ACCESS_KEY_ID"], aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"])

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def s3_server(log: Path, timeout: float = 60) -> Iterator[S3]:
    """moto's S3 server on 127.0.0.1:<free port>, once it answers HTTP; stopped on exit."""
    exe = BIN / "moto_server"
    if not exe.exists():
        raise ServiceError(f"{exe} not found; install the dev extra (`pip install -e '.[dev]'`: moto[server])")
    port = free_port()
    with open(log, "a") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    s3 = S3(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(s3.endpoint, timeout=2)
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"moto_server did not answer on {s3.endpoint}:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield s3
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
