"""The serial-log follower's faces (sync, async, background) and the log's tail."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from corral.machine import console


def writer(log: Path, parts: list[bytes], then: threading.Event) -> threading.Thread:
    """Append parts to the log a little apart, then set `then`."""

    def go() -> None:
        for part in parts:
            time.sleep(0.05)
            with open(log, "ab") as f:
                f.write(part)
        then.set()

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def test_tail_keeps_the_last_non_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    assert console.tail(log) == []
    log.write_bytes(b"one\r\n\r\ntwo\nthree\n")
    assert console.tail(log, 2) == ["two", "three"]


def test_follow_reads_until_the_writer_is_gone_then_once_more(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"  # not there yet: following starts before the VM writes
    done = threading.Event()
    thread = writer(log, [b"boot", b"ing\n", b"last words\n"], done)
    got = b"".join(console.follow(log, running=lambda: not done.is_set(), poll=0.01))
    thread.join()
    assert got == b"booting\nlast words\n"


def test_follow_from_the_end_and_after_a_replaced_log(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"old output\n")
    start = console.size(log)
    calls = iter([True, True, False])
    chunks = console.follow(log, start=start, running=lambda: next(calls), poll=0)
    with open(log, "ab") as f:
        f.write(b"new\n")
    assert next(chunks) == b"new\n"
    log.write_bytes(b"short\n")  # replaced by a shorter file: read from its start
    assert list(chunks) == [b"short\n"]


def test_follow_async_is_the_same_follower(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    done = threading.Event()

    async def collect() -> bytes:
        got = bytearray()
        async for chunk in console.follow_async(log, running=lambda: not done.is_set(), poll=0.01):
            got.extend(chunk)
        return bytes(got)

    thread = writer(log, [b"a", b"b", b"c"], done)
    assert asyncio.run(collect()) == b"abc"
    thread.join()


def test_following_feeds_a_sink_for_the_block(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    got = bytearray()
    with console.following(log, got.extend, poll=0.01):
        log.write_bytes(b"inside\n")
        time.sleep(0.1)
        with open(log, "ab") as f:
            f.write(b"at the end\n")
    assert got == b"inside\nat the end\n"  # what came before the block ended is all there


def test_following_async_feeds_a_sink_for_the_block(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    got = bytearray()

    async def go() -> None:
        async with console.following_async(log, got.extend, poll=0.01):
            log.write_bytes(b"hello\n")
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(go())
    assert got == b"hello\n"
