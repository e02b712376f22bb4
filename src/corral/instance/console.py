"""Following an instance's serial log as it grows (for configure, builds and `logs -f`)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

POLL = 0.2


def _follow(path: Path, sink: Callable[[bytes], None], stop: threading.Event) -> None:
    position = 0
    while True:
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
            f.seek(position)
            while chunk := f.read(65536):
                sink(chunk)
                position += len(chunk)
        if stop.wait(POLL):
            return


@contextlib.contextmanager
def following(path: Path, sink: Callable[[bytes], None]) -> Iterator[None]:
    """Pass what is appended to `path` to `sink` from a background thread, for the block."""
    stop = threading.Event()
    thread = threading.Thread(target=_follow, args=(path, sink, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
