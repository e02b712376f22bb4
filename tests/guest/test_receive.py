"""What a guest sends, written on the host: hostile tars are refused and write nothing outside.

The hostile archives are made here with tarfile, as the 2025 tarfile CVEs describe them
(CVE-2025-4517, -4330, -4138: symlink chains that climb out through `..` and PATH_MAX-long
names, a link then a file written through it, a directory replaced by a link, hard links
out), plus absolute and `..` names and device nodes. Each is fed as a byte stream.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import GuestError, InvalidInput
from corral.guest.receive import extract, receive_file, receive_tree, umask
from corral.guest.tar import DIRECTORY, HARDLINK, SYMLINK
from hostile_tars import TarMember, climbing_chain, member, tar


def reader(data: bytes):
    return io.BytesIO(data).read


def ok() -> None:
    pass


@pytest.fixture
def place(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(dst, outside): a destination, and beside it a victim tree that must never change."""
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0\n")
    before = snapshot(tmp_path)
    dst = tmp_path / "dst"
    yield dst, outside
    after = snapshot(tmp_path)
    assert {p: v for p, v in after.items() if not p.startswith("dst")} == {
        p: v for p, v in before.items() if not p.startswith("dst")
    }


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
    out: dict[str, tuple[int, bytes | str | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body: bytes | str | None = None
        if stat.S_ISLNK(st.st_mode):
            body = str(path.readlink())
        elif stat.S_ISREG(st.st_mode):
            body = path.read_bytes()
        out[str(path.relative_to(root))] = (st.st_mode, body)
    return out


def deep_climb() -> list[TarMember]:
    """The same long directories, and from the deepest one a link that climbs one too many."""
    comp = "d" * 247
    dirs = [member("/".join([comp] * depth), DIRECTORY) for depth in range(1, 17)]
    return [*dirs, member("/".join([comp] * 16) + "/l", SYMLINK, link="../" * 17 + "outside")]


def nul_name() -> TarMember:
    info, data = member("placeholder", SYMLINK, link="x")
    info.pax_headers = {"path": "a\0b"}
    return info, data


HOSTILE: dict[str, tuple[list[TarMember], str]] = {
    "absolute name": ([member("/tmp/corral-absolute", data=b"x")], "is an absolute name"),
    "dot-dot name": ([member("../outside/etc/passwd", data=b"x")], "climbs out with '..'"),
    "dot-dot inside": ([member("a/../../outside/x", data=b"x")], "climbs out with '..'"),
    "absolute link": ([member("l", SYMLINK, link="/etc/passwd")], "absolute path '/etc/passwd'"),
    "climbing link": ([member("l", SYMLINK, link="../outside")], "leads out of the destination"),
    "deep climbing link": (
        [member("a/b", DIRECTORY), member("a/b/l", SYMLINK, link="../../../outside")],
        "leads out of the destination",
    ),
    "dot-dot after a name": (
        [member("a", SYMLINK, link="."), member("b", SYMLINK, link="a/../..")],
        "with '..' after a name",
    ),
    "link then file through it": (
        [member("l", SYMLINK, link="sub"), member("sub", DIRECTORY), member("l/x", data=b"x")],
        "would go through a link",
    ),
    "CVE-2025-4517 chain": (climbing_chain(), "would go through a link"),
    "CVE-2025-4517 chain, climbing from the real path": (
        deep_climb(),
        "leads out of the destination",
    ),
    "directory replaced by a link": (
        [member("d", DIRECTORY), member("d", SYMLINK, link="."), member("d/x", data=b"x")],
        "would replace a directory",
    ),
    "directory replaced by a file": (
        [member("d", DIRECTORY), member("d", data=b"x")],
        "would replace a directory",
    ),
    "link turned into a directory": (
        [member("d", SYMLINK, link="e"), member("d", DIRECTORY), member("d/x", data=b"x")],
        "would turn a file or link into a directory",
    ),
    "hard link out": (
        [member("h", HARDLINK, link="../outside/etc/passwd")],
        "climbs out with '..'",
    ),
    "absolute hard link": ([member("h", HARDLINK, link="/etc/passwd")], "is an absolute name"),
    "hard link to a link": (
        [member("l", SYMLINK, link="x"), member("h", HARDLINK, link="l")],
        "not a file this copy wrote",
    ),
    "link loop": (
        [
            member("a", SYMLINK, link="b"),
            member("b", SYMLINK, link="a"),
            member("c", SYMLINK, link="a/x"),
        ],
        "through too many links",
    ),
    "character device": ([member("null", tarfile.CHRTYPE)], "is a device or a fifo"),
    "block device": ([member("sda", tarfile.BLKTYPE)], "is a device or a fifo"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "is a device or a fifo"),
    "NUL in a name": ([nul_name()], "holds a NUL character"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_tars_are_refused_and_write_nothing_outside(
    place: tuple[Path, Path], case: str
) -> None:
    dst, _ = place
    members, words = HOSTILE[case]
    with pytest.raises(GuestError) as exc:
        receive_tree(reader(tar(*members)), dst, ok)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("refused the guest's tar: ")
    assert words in message
    assert not dst.exists()  # a new destination appears whole or not at all
    assert sorted(p.name for p in dst.parent.iterdir()) == ["outside"]  # no temporary left


def test_links_already_in_the_destination_are_not_followed(place: tuple[Path, Path]) -> None:
    dst, outside = place
    (dst / "pre").mkdir(parents=True)
    (dst / "etc").symlink_to(outside / "etc")
    (dst / "pre" / "out").symlink_to(outside)
    for members, words in (
        ([member("etc/passwd", data=b"owned\n")], "would go through a link"),
        ([member("l", SYMLINK, link="etc/passwd")], "through a link this copy did not make"),
        (
            [member("L", SYMLINK, link="pre"), member("via", SYMLINK, link="L/out/etc")],
            "through a link this copy did not make",
        ),
        ([member("h", HARDLINK, link="etc/passwd")], "not a file this copy wrote"),
    ):
        with pytest.raises(GuestError, match=words):
            receive_tree(reader(tar(*members)), dst, ok)


def test_a_good_tree_lands_with_safe_modes_and_our_owner(place: tuple[Path, Path]) -> None:
    dst, _ = place
    data = tar(
        member("./", DIRECTORY, mode=0o777),
        member("./bin", DIRECTORY, mode=0o777),
        member("./bin/tool", data=b"#!/bin/sh\n", mode=0o6777),
        member("./bin/secret", data=b"s", mode=0o000),
        member("./lib", DIRECTORY),
        member("./lib/libx.so.1", data=b"ELF"),
        member("./lib/libx.so", SYMLINK, link="libx.so.1"),
        member("./bin/lib", SYMLINK, link="../lib"),
        member("./bin/via", SYMLINK, link="lib/libx.so"),  # through a link this copy made
        member("./bin/tool2", HARDLINK, link="./bin/tool"),
        member("./dangling", SYMLINK, link="not/there/yet"),
    )
    receive_tree(reader(data), dst, ok)
    mask = umask()
    assert stat.S_IMODE((dst / "bin" / "tool").stat().st_mode) == 0o755 & ~mask
    assert stat.S_IMODE((dst / "bin" / "secret").stat().st_mode) == 0o600 & ~mask
    assert stat.S_IMODE((dst / "bin").stat().st_mode) == 0o755 & ~mask
    assert (dst / "bin" / "via").read_bytes() == b"ELF"
    assert (dst / "bin" / "tool2").stat().st_ino == (dst / "bin" / "tool").stat().st_ino
    assert str((dst / "dangling").readlink()) == "not/there/yet"
    assert {p.lstat().st_uid for p in dst.rglob("*")} == {os.getuid()}
    assert not list(dst.rglob(".corral-*"))


def test_an_existing_destination_is_unpacked_into(place: tuple[Path, Path]) -> None:
    dst, _ = place
    (dst / "keep").mkdir(parents=True)
    (dst / "old").write_text("old")
    receive_tree(reader(tar(member("old", data=b"new"), member("keep/x", data=b"x"))), dst, ok)
    assert (dst / "old").read_text() == "new" and (dst / "keep" / "x").read_text() == "x"


def test_a_failed_sender_keeps_nothing(place: tuple[Path, Path]) -> None:
    dst, _ = place

    def failed() -> None:
        raise GuestError("copy from /x failed: tar: /x: Permission denied")

    with pytest.raises(GuestError, match="Permission denied"):
        receive_tree(reader(tar(member("a", data=b"a"))), dst, failed)
    assert not dst.exists()
    with pytest.raises(GuestError, match="Permission denied"):
        receive_file(reader(b"half a file"), dst, failed)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["outside"]


def test_data_after_the_end_is_bounded(tmp_path: Path) -> None:
    data = tar(member("a", data=b"a"))
    assert extract(reader(data + bytes(10240)), tmp_path) == 1
    (tmp_path / "x").mkdir()
    with pytest.raises(GuestError, match="data goes on after its end"):
        extract(reader(data + bytes(2 << 20)), tmp_path / "x")


def test_a_file_download_replaces_a_planted_link(place: tuple[Path, Path]) -> None:
    """The destination (or any name beside it) may be a link planted by someone else: the
    bytes go to a new file, renamed over it, never through it."""
    dst, outside = place
    dst.mkdir()
    target = dst / "file"
    target.symlink_to(outside / "etc" / "passwd")
    for guess in ("file.tmp", ".file.tmp", f".file.{os.getpid()}.tmp"):  # the old temp names
        (dst / guess).symlink_to(outside / "etc" / "passwd")
    receive_file(reader(b"from the guest\n"), target, ok)
    assert not target.is_symlink() and target.read_bytes() == b"from the guest\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask()
    with pytest.raises(InvalidInput, match="is a directory"):
        receive_file(reader(b"x"), dst, ok)


def zeros_tar(size: int) -> Iterator[bytes]:
    """A tar of one file of `size` zero bytes, made as it is read."""
    info = tarfile.TarInfo("big")
    info.size = size
    yield info.tobuf(tarfile.PAX_FORMAT)
    chunk = bytes(1 << 16)
    for _ in range(size // len(chunk)):
        yield chunk
    yield bytes(1024)


def test_a_big_tree_streams_to_disk(tmp_path: Path) -> None:
    size = 64 << 20
    pieces = zeros_tar(size)
    rest = bytearray()

    def read(n: int) -> bytes:
        while len(rest) < n and (piece := next(pieces, None)) is not None:
            rest.extend(piece)
        out = bytes(rest[:n])
        del rest[:n]
        return out

    tracemalloc.start()
    try:
        extract(read, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "big").stat().st_size == size
    assert peak < 8 << 20  # a few chunks, never the archive
