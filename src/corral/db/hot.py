"""The statements of every VM create and job end, run on the driver's cursor on PostgreSQL.

SQLAlchemy's work per execution (cache key, parameter processing, result objects) costs more
CPU than psycopg and the round trip together (about 0.14 ms against 0.09 ms here), and a server
taking many creates is bound by its CPU. So these few statements (built once, in
corral.db.statements) are compiled once for PostgreSQL and executed on the psycopg connection
under the SQLAlchemy one, in the same transaction; their database errors are raised as
SQLAlchemy's (IntegrityError, ...), like any other statement's. On SQLite they run through
SQLAlchemy as usual.

Such a statement must name every value it writes: column defaults (`onupdate`) are not applied
here, so a parameter left out is an error rather than a NULL.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.rows import namedtuple_row
from psycopg.types.json import Json
from sqlalchemy import JSON, Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


class _Compiled(NamedTuple):
    query: str
    defaults: dict[str, Any]  # the values the statement carries itself (literals, limits)
    required: frozenset[str]  # what each execution must give
    json: tuple[str, ...]  # parameters sent as JSON


_cache: dict[int, _Compiled] = {}
_lock = threading.Lock()


def first(conn: Connection, stmt: Executable, params: dict[str, Any]) -> Any:
    """The statement's first row (columns as attributes, like a Row's), or None."""
    if conn.dialect.name != "postgresql":
        return conn.execute(stmt, params).first()
    compiled = _compiled(stmt, conn.dialect)
    missing = compiled.required - params.keys()
    if missing:
        raise AssertionError(f"statement parameters missing: {sorted(missing)}")
    values = {**compiled.defaults, **params}
    for name in compiled.json:
        values[name] = Json(values[name])
    raw = conn.connection.driver_connection
    try:
        with raw.cursor(row_factory=namedtuple_row) as cursor:  # type: ignore[union-attr]  # psycopg only: callers check the dialect
            cursor.execute(compiled.query, values)
            return cursor.fetchone() if cursor.description else None
    except psycopg.Error as exc:
        raise DBAPIError.instance(
            compiled.query, values, exc, psycopg.Error, dialect=conn.dialect
        ) from exc


def run(conn: Connection, stmt: Executable, params: dict[str, Any]) -> None:
    """Execute a statement that returns no rows."""
    first(conn, stmt, params)


def _compiled(stmt: Executable, dialect: Dialect) -> _Compiled:
    found = _cache.get(id(stmt))
    if found is not None:
        return found
    # Every statement here is a Core clause, compiled by the dialect's SQL compiler.
    compiled = cast(SQLCompiler, cast(ClauseElement, stmt).compile(dialect=dialect))
    defaults = {k: v for k, v in compiled.params.items() if v is not None}
    required = frozenset(k for k, v in compiled.params.items() if v is None)
    json = tuple(k for k, b in compiled.binds.items() if isinstance(b.type, JSON))
    found = _Compiled(compiled.string, defaults, required, json)
    with _lock:
        _cache[id(stmt)] = found
    return found
