"""A VM's serial console log: its last lines, and following it as it grows.

One follower serves everyone who watches a log grow (`logs -f`, configure, build VMs booting,
a build following another's step, the node's console stream): `follow` for synchronous
callers, `follow_async` for asyncio ones, `following` to feed a sink from a background thread
for the length of a block. Each reads what is new, and stops once `running` says the writer has
gone, after one last read, so nothing written before the end is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

POLL = 0.2  # seconds between looks at a quiet log
CHUNK = 1 << 20  # most bytes read at once


def tail(log: Path, lines: int = 20) -> list[str]:
    """The last non-blank lines of a log, for error messages."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()][-lines:]


def size(log: Path) -> int:
    """Where a follower that wants only new output starts."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def read_from(log: Path, position: int) -> tuple[bytes, int]:
    """What follows `position` (at most CHUNK bytes) and the position after it; a log that was
    replaced by a shorter one is read from its start."""
    try:
        with open(log, "rb") as f:
            if f.seek(0, os.SEEK_END) < position:
                position = 0
            f.seek(position)
            chunk = f.read(CHUNK)
    except FileNotFoundError:
        return b"", position
    return chunk, position + len(chunk)


def _always() -> bool:
    return True


def follow(
    log: Path,
    *,
    start: int = 0,
    running: Callable[[], bool] = _always,
    poll: float = POLL,
    pause: Callable[[float], object] = time.sleep,
) -> Iterator[bytes]:
    """Yield the log's contents from `start` as they are written, until `running` is false."""
    position = start
    while True:
        alive = running()  # asked before reading: what was written before the end is read
        while True:
            chunk, position = read_from(log, position)
            if not chunk:
                break
            yield chunk
        if not alive:
            return
        pause(poll)


async def follow_async(
    log: Path, *, start: int = 0, running: Callable[[], bool] = _always, poll: float = POLL
) -> AsyncIterator[bytes]:
    """`follow` for asyncio: `running` and the reads run in a worker thread."""
    position = start
    while True:
        alive = await asyncio.to_thread(running)
        while True:
            chunk, position = await asyncio.to_thread(read_from, log, position)
            if not chunk:
                break
            yield chunk
        if not alive:
            return
        await asyncio.sleep(poll)


@contextlib.contextmanager
def following(log: Path, sink: Callable[[bytes], None], *, poll: float = POLL) -> Iterator[None]:
    """Pass what is written to the log to `sink` from a background thread, for the block."""
    done = threading.Event()

    def pump() -> None:
        for chunk in follow(log, running=lambda: not done.is_set(), poll=poll, pause=done.wait):
            sink(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


@contextlib.asynccontextmanager
async def following_async(
    log: Path, sink: Callable[[bytes], None], *, poll: float = POLL
) -> AsyncIterator[None]:
    """`following` for asyncio: a task feeds the sink for the block."""

    async def pump() -> None:
        async for chunk in follow_async(log, poll=poll):
            sink(chunk)

    task = asyncio.create_task(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
