"""The database layer on SQLite and PostgreSQL: migrations build exactly the models' schema,
apply once (also when several processes start together), and SQLite runs with WAL and
foreign keys."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from control.postgres import PostgresServer
from corral.db.engine import Database, check_url
from corral.db.migrate import current, head, upgrade
from corral.db.models import Base
from corral.errors import InvalidInput


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sub/dir/corral.db"  # directories are made
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url(server.create_database())


def test_migrations_build_the_models_schema(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        assert current(db) is None
        assert upgrade(db) == head() == "0006"
        assert current(db) == "0006"
        assert upgrade(db) == "0006"  # a no-op the second time
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        tables = set(inspect(db.engine).get_table_names())
        assert {"hosts", "storage_pools", "storage_objects", "boot_sources", "vms", "vm_tags",
                "jobs", "api_tokens", "allocations"} <= tables  # fmt: skip
    finally:
        db.dispose()


def test_processes_starting_together_migrate_once(empty_url: str) -> None:
    databases = [Database(empty_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(databases))

    def start(db: Database) -> None:
        barrier.wait()
        try:
            upgrade(db)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert {current(db) for db in databases} == {"0006"}
    finally:
        for db in databases:
            db.dispose()


def test_sqlite_switches_to_wal_after_a_writer_of_a_new_file_is_done(tmp_path: Path) -> None:
    """SQLite refuses the switch at once while another connection writes; corral waits."""
    path = tmp_path / "corral.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE other (x)")
    threading.Timer(0.3, writer.execute, ["COMMIT"]).start()
    db = Database(f"sqlite:///{path}")
    try:
        with db.read() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        db.dispose()
        writer.close()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/corral.db")
    try:
        with db.read() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://x/y", "supports sqlite and postgresql"),
        ("sqlite://", "needs a file"),
        ("sqlite:///:memory:", "needs a file"),
        ("postgresql+asyncpg://x/y", "psycopg 3"),
        ("not a url", "invalid database URL"),
    ],
)
def test_database_urls(url: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        check_url(url)
    assert check_url("postgresql://u@h/db").startswith("postgresql+psycopg://")


def test_pooled_connections_outlive_a_postgresql_restart() -> None:
    """Connections are not pinged on every checkout, only after IDLE_PING idle seconds: a pool
    whose server restarted meanwhile hands out fresh connections, not dead ones."""
    import time

    from corral.db.engine import IDLE_PING

    server = PostgresServer().start()
    try:
        db = Database(server.url(server.create_database()))
        with db.read() as session:
            backend = session.execute(text("SELECT pg_backend_pid()")).scalar()
        server.restart()
        time.sleep(IDLE_PING + 0.2)
        with db.read() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar() != backend
        with db.write() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
        db.dispose()
    finally:
        server.stop()
