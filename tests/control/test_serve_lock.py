"""Issue #11, finding 9: one `corral serve` per SQLite file. A second server on the same file
would fail the first's running jobs when it starts; it must refuse instead, naming the first,
while `corral token ...` and `corral db upgrade` keep working on the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from control.postgres import free_port
from corral.context import Context
from corral.db.engine import Database
from corral.db.models import Job, utcnow
from corral.db.serve_lock import ServeLock, lock_path
from helpers import corral, corral_popen


def start_server(ctx: Context, url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = corral_popen(ctx, "serve", "--listen", f"127.0.0.1:{port}", "--database", url)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "corral serve did not start"
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def job_status(url: str, job_id: uuid.UUID) -> str:
    db = Database(url)
    try:
        with db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job.status
    finally:
        db.dispose()


def test_a_second_server_on_one_sqlite_file_refuses_to_start(ctx: Context, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/corral.db"
    first, port = start_server(ctx, url)
    try:
        # A job of the first server, under way.
        db = Database(url)
        try:
            with db.write() as session:
                job = Job(kind="vm.create", status="running", started_at=utcnow())
                session.add(job)
            job_id = job.id
        finally:
            db.dispose()

        second = corral(ctx, "serve", "--listen", "127.0.0.1:1", "--database", url, timeout=60)
        assert second.returncode != 0
        line = second.stderr.splitlines()[0]
        assert "another corral serve is running" in line
        assert f"pid {first.pid}" in line and f"127.0.0.1:{port}" in line, second.stderr
        assert job_status(url, job_id) == "running"  # untouched
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200

        # The other commands work on the file while it is served.
        made = corral(ctx, "token", "create", "ops", "--database", url, timeout=60)
        assert made.returncode == 0 and made.stdout.strip(), made.stderr
        upgraded = corral(ctx, "db", "upgrade", "--database", url, timeout=60)
        assert upgraded.returncode == 0, upgraded.stderr
    finally:
        stop_server(first)
    # Once the first is gone, a new server starts (and fails what the first left unfinished).
    third, _ = start_server(ctx, url)
    try:
        assert job_status(url, job_id) == "failed"
    finally:
        stop_server(third)


def test_the_lock_is_per_file_reentrant_in_a_process_and_none_for_postgresql(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    assert lock_path(url) == tmp_path / "a.db.serve.lock"
    assert lock_path("postgresql+psycopg://u@h/db") is None
    ServeLock("postgresql+psycopg://u@h/db").acquire()  # nothing to hold
    take = f"from corral.db.serve_lock import ServeLock; ServeLock({url!r}).acquire()"
    outer, inner = ServeLock(url), ServeLock(url)
    outer.acquire("http://127.0.0.1:8000")  # the CLI, before it starts the server
    inner.acquire()  # the control plane of that server
    inner.release()
    other_process = subprocess.run([sys.executable, "-c", take], capture_output=True, text=True)
    assert other_process.returncode != 0
    assert f"(pid {os.getpid()}, listening on http://127.0.0.1:8000)" in other_process.stderr
    outer.release()
    free = subprocess.run([sys.executable, "-c", take], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr
