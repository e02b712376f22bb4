"""The group-commit writer: writes that queued together commit in one transaction, and one
that fails neither takes the others with it nor leaves anything of its own behind."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from corral.control.events import emit
from corral.db.engine import Database
from corral.db.migrate import upgrade
from corral.db.models import ApiToken
from corral.db.writer import BatchWriter
from corral.errors import Conflict


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    upgrade(database)
    yield database
    database.dispose()


def _alone(db: Database) -> Callable[..., Any]:
    def alone(fn: Callable[..., Any], *args: Any) -> Any:
        with db.write() as session:
            return fn(session, *args)

    return alone


@contextlib.contextmanager
def held(writer: BatchWriter) -> Iterator[None]:
    """The writer busy with a write that waits: what is submitted meanwhile queues up."""
    started, release = threading.Event(), threading.Event()

    def gate(_session: Session) -> None:
        started.set()
        release.wait(10)

    gate_done = writer.submit(gate)
    assert started.wait(10)
    try:
        yield
    finally:
        release.set()
        gate_done.result(10)


def add_token(session: Session, name: str) -> str:
    session.add(ApiToken(id=uuid.uuid4(), name=name, key=name[:16], token_hash="0" * 64))
    session.flush()
    emit(session, "host", "created", uuid.uuid4(), None, {"name": name})
    return name


def add_token_then_refuse(session: Session, name: str) -> str:
    add_token(session, name)
    raise Conflict(f"{name} refused")


def token_names(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.scalars(select(ApiToken.name)))


def test_a_failing_write_is_undone_alone(db: Database) -> None:
    published: list[Any] = []
    db.after_commit = published.extend
    writer = BatchWriter(db, contextlib.nullcontext, _alone(db), writers=1)
    try:
        with held(writer):
            first = writer.submit(add_token, "first")
            refused = writer.submit(add_token_then_refuse, "refused")
            duplicate = writer.submit(add_token, "first")
            last = writer.submit(add_token, "last")
        assert first.result(10) == "first" and last.result(10) == "last"
        with pytest.raises(Conflict, match="refused refused"):
            refused.result(10)
        with pytest.raises(Exception, match=r"(?i)unique"):
            duplicate.result(10)
    finally:
        writer.close()
    assert token_names(db) == {"first", "last"}
    # Only what was committed was announced, once.
    assert sorted(e.data["name"] for e in published) == ["first", "last"]


def test_writes_that_queued_together_share_one_transaction(db: Database) -> None:
    # SQLite has no transaction ids; a write there sees the batch's earlier writes.
    current = "SELECT count(*) FROM api_tokens" if db.is_sqlite else "SELECT txid_current()"

    def mark(session: Session, name: str) -> Any:
        add_token(session, name)
        return session.execute(text(current)).scalar()

    writer = BatchWriter(db, contextlib.nullcontext, _alone(db), writers=1)
    try:
        with held(writer):
            futures = [writer.submit(mark, f"t{n}") for n in range(5)]
        seen = [f.result(10) for f in futures]
    finally:
        writer.close()
    if db.is_sqlite:
        assert seen == [1, 2, 3, 4, 5]
    else:
        assert len(set(seen)) == 1, seen  # one transaction id for all five
    assert token_names(db) == {f"t{n}" for n in range(5)}


def test_one_writer_on_sqlite_two_on_postgresql(db: Database) -> None:
    """On PostgreSQL, while one writer waits on its transaction, the other commits what comes
    next; SQLite takes one writer at a time anyway."""
    writer = BatchWriter(db, contextlib.nullcontext, _alone(db))
    try:
        if db.is_sqlite:
            assert len(writer._threads) == 1
            return
        with held(writer):
            assert writer.submit(add_token, "meanwhile").result(10) == "meanwhile"
    finally:
        writer.close()
