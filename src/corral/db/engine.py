"""Engines and sessions for SQLite and PostgreSQL, and the one rule about transactions.

`Database.write()` is a transaction that may change rows; `Database.read()` one that only reads.
On SQLite a write transaction starts with BEGIN IMMEDIATE, so writers are serialised by the
database itself (across processes too) and a read-then-write can never be overtaken; writers of
one process also queue on a lock first, instead of sleeping in SQLite's busy handler. On
PostgreSQL transactions are READ COMMITTED and services lock the rows they decide on
(`SELECT ... FOR UPDATE`).

Nothing here is built at import time: the API and the CLI make a Database from settings.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from corral.errors import InvalidInput
from corral.private import private_sqlite_file

SQLITE_BUSY_TIMEOUT = 60  # seconds a writer of another process may keep us waiting
IDLE_PING = 2.0  # seconds: a PostgreSQL connection idle longer is checked before use
_WRITE = "corral_write"


def check_url(url: str) -> str:
    """Accept sqlite:///FILE and postgresql+psycopg://... URLs; one clear error otherwise."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"invalid database URL {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
            raise InvalidInput(
                f"database URL {url!r}: corral talks to PostgreSQL with psycopg 3",
                hint="use postgresql+psycopg://USER@HOST/DB",
            )
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise InvalidInput(
                f"database URL {url!r}: SQLite needs a file (several threads share it)",
                hint="use sqlite:////absolute/path/corral.db",
            )
        return url
    raise InvalidInput(f"database URL {url!r}: corral supports sqlite and postgresql")


class Database:
    """One engine, its sessions, and the hook that runs after each committed write."""

    def __init__(self, url: str, *, pool_size: int = 16) -> None:
        self.url = check_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self.engine: Engine = _make_engine(self.url, self.dialect, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        # Called with session.info["events"] once a write transaction has committed.
        self.after_commit: Callable[[list[Any]], None] | None = None
        # Called with the session and its events just before a write transaction commits.
        self.before_commit: Callable[[Session, list[Any]], None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits when the block ends without an exception."""
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            with self._sessions() as session:
                session.connection(execution_options={_WRITE: True})  # BEGIN (IMMEDIATE)
                yield session
                events = session.info.pop("events", None)
                if events and self.before_commit is not None:
                    self.before_commit(session, events)
                session.commit()
        finally:
            if self._write_lock is not None:
                self._write_lock.release()
        if events and self.after_commit is not None:
            self.after_commit(events)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, dialect: str, pool_size: int) -> Engine:
    if dialect == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            private_sqlite_file(Path(database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT},
            pool_size=pool_size,
            max_overflow=2 * pool_size,
        )
        _sqlite_pragmas_and_begin(engine)
        return engine
    engine = create_engine(
        url,
        # Connections are kept, not churned: a new PostgreSQL connection costs a process.
        pool_size=pool_size,
        max_overflow=4,
        connect_args={"connect_timeout": 10},
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle for IDLE_PING seconds.

    pool_pre_ping would cost a round trip on every checkout (a tenth of a VM create); a
    connection used a moment ago is alive, and one that is not (the server restarted) fails
    its ping here, so the pool replaces it instead of handing it to a request.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used_at = record.info.get("used_at")
        if used_at is None or time.monotonic() - used_at < IDLE_PING:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def _switch_to_wal(cursor: Any) -> None:
    """PRAGMA journal_mode=WAL, waiting for other writers as any write would.

    Switching a new file into WAL needs it to itself, and SQLite answers "database is locked"
    at once rather than calling its busy handler (seen when several processes start on one new
    file); once in WAL mode, the switch is a no-op.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas_and_begin(engine: Engine) -> None:
    """WAL and foreign keys on every connection; BEGIN issued by us, IMMEDIATE for writers.

    The sqlite3 module would otherwise open transactions on its own (and only before DML), which
    lets two writers both read and then fail to upgrade their locks.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes of the process
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
