"""Group commit: one thread runs the writes of the process, several per transaction.

Writes queue for one thread, which takes whatever has queued (up to `max_batch`) and runs it
in one transaction: one BEGIN, one COMMIT (one flush to disk) and, on PostgreSQL, one
notification to sibling processes for the lot. A write learns its result only after the commit.

How a write that fails is kept from the others depends on the database:

- SQLite takes one writer at a time; threads queueing on its lock would pass the GIL around
  while the one holding the lock waits to run. Each write runs in its own SAVEPOINT (in-process,
  nearly free): one that fails is rolled back alone and gets its exception.
- On PostgreSQL a savepoint costs two round trips, as much as the work of a small write. So a
  batch runs optimistically, its writes one after the other in one transaction; if any of them
  fails (or the commit does), the whole batch is rolled back and each write runs again alone,
  with `alone` (which maps errors and retries deadlocks). Writes must be safe to run again, as
  they already are for those retries. Two threads take batches in turn (POSTGRESQL_WRITERS):
  one thread mostly waits for round trips, and the rows they lock are taken with SKIP LOCKED.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from sqlalchemy.orm import Session

from corral.db.engine import Database

log = logging.getLogger(__name__)

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]
# While one writer waits for PostgreSQL to answer, a second one can run the next batch.
POSTGRESQL_WRITERS = 2
Alone = Callable[..., Any]  # alone(fn, *args): fn(session, *args) in a transaction of its own


class BatchWriter:
    def __init__(
        self,
        db: Database,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        alone: Alone,
        *,
        max_batch: int = 64,
        writers: int | None = None,
    ) -> None:
        self.db = db
        self.errors = errors  # maps database exceptions to corral's, around each write
        self.alone = alone
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"corral-db-writer-{n}", daemon=True)
            for n in range(writers or (1 if db.is_sqlite else POSTGRESQL_WRITERS))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run fn(session, *args) in a write transaction; its result or exception, after commit."""
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            closing = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            batch = [i for i in batch if i[0].set_running_or_notify_cancel()]
            if self.db.is_sqlite:
                self._with_savepoints(batch)
            else:
                self._optimistic(batch)
            if closing:
                return

    # --- SQLite ---------------------------------------------------------------------------

    def _with_savepoints(self, batch: list[_Item]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self.errors(), self.db.write() as session:
                for future, fn, args in batch:
                    outcomes.append((future, *self._one(session, fn, args)))
        except BaseException as exc:  # the commit failed: nothing of the batch was kept
            log.warning("a write transaction of %d writes failed: %s", len(batch), exc)
            for future, _, _ in batch:
                future.set_exception(exc)
            return
        for future, value, error in outcomes:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _one(
        self, session: Session, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> tuple[Any, BaseException | None]:
        events = session.info.setdefault("events", [])
        mark = len(events)
        try:
            with self.errors(), session.begin_nested():
                value = fn(session, *args)
        except Exception as exc:
            del events[mark:]  # what a rolled-back write announced did not happen
            session.expunge_all()
            return None, exc
        # Each write gets objects of its own: what one returns is not touched by the next.
        session.expunge_all()
        return value, None

    # --- PostgreSQL -----------------------------------------------------------------------

    def _optimistic(self, batch: list[_Item]) -> None:
        if len(batch) > 1:
            values: list[Any] = []
            try:
                with self.db.write() as session:
                    for _, fn, args in batch:
                        values.append(fn(session, *args))
                        session.flush()
                        session.expunge_all()  # objects of its own, as on SQLite
            except Exception as exc:
                log.debug("a batch of %d writes failed (%s): each runs alone", len(batch), exc)
            else:
                for (future, _, _), value in zip(batch, values, strict=True):
                    future.set_result(value)
                return
        for future, fn, args in batch:
            try:
                future.set_result(self.alone(fn, *args))
            except BaseException as exc:
                future.set_exception(exc)
