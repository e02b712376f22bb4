"""Group commit for SQLite: one thread runs every write of the process, several per transaction.

SQLite takes one writer at a time. Threads queueing on its lock would pass the GIL around
while the one holding the lock waits to run, and each write would pay for its own transaction.
Here writes queue for one thread, which takes whatever has queued (up to `max_batch`) and runs
it in one transaction, each write in its own SAVEPOINT: a write that fails is rolled back alone
and gets its exception; the others commit together, and only then learn their results.
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


class BatchWriter:
    def __init__(
        self,
        db: Database,
        errors: Callable[[], contextlib.AbstractContextManager[None]],
        *,
        max_batch: int = 64,
    ) -> None:
        self.db = db
        self.errors = errors  # maps database exceptions to corral's, around each write
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="corral-db-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run fn(session, *args) in a write transaction; its result or exception, after commit."""
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

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
            self._run([i for i in batch if i[0].set_running_or_notify_cancel()])
            if closing:
                return

    def _run(self, batch: list[_Item]) -> None:
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
