"""A coroutine run every so many seconds in the background, until stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, interval: float, work: Callable[[], Awaitable[None]], what: str) -> None:
        self.interval = interval  # seconds; 0 never runs it
        self.work = work
        self.what = what  # for the log, when a round fails
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.work()
            except Exception:  # the database may be away for a moment: try again next time
                log.exception("%s failed", self.what)
