"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temp dir, pg_ctl start
on 127.0.0.1 and a free port, one fresh database per test (copied from a migrated template),
pg_ctl stop at the end.

initdb and pg_ctl refuse to run as root: as root, they run as the `postgres` user that Debian's
postgresql package creates (or a `corral-pg` system user made here when that is missing).
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SUPERUSER = "corral"


def find_bin(name: str) -> str:
    found = sorted(map(str, Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), key=_version_key)
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: the control-plane tests need a real "
            "PostgreSQL (scripts/setup.sh installs Debian's postgresql package)"
        )
    return path


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parts[4])
    except (IndexError, ValueError):
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for the current user, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "corral-pg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "corral-pg"],
        check=True,
    )
    return pwd.getpwnam("corral-pg")


class PostgresServer:
    def __init__(self, *, fsync: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="corral-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.fsync = fsync
        self.user = _server_user()
        self._names = itertools.count(1)
        self.running = False

    def _run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.user is not None:
            extra = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.root),
        }
        proc = subprocess.run(
            argv, cwd=self.root, env=env, capture_output=True, text=True, **extra, **kw
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr or proc.stdout}")
        return proc

    def start(self) -> PostgresServer:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(
            [
                find_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
            "-c shared_buffers=128MB",
        ]
        if not self.fsync:  # tests: durability is not what they check
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            [
                find_bin("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
                "start",
            ]
        )
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            try:
                self._run([find_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
            finally:
                self.running = False
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop (fast: connections are cut) and start again with the same options."""
        log = str(self.root / "server.log")  # else the new server holds our output pipe open
        self._run(
            [find_bin("pg_ctl"), "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart"]
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database, autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, template: str | None = None) -> str:
        name = f"corral_{os.getpid()}_{next(self._names)}"
        using = f" TEMPLATE {template}" if template else ""
        self.execute(f"CREATE DATABASE {name}{using}")
        return name
