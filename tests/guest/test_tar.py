"""corral's tar reader against tarfile's writer: every format guests use, and broken input."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.errors import GuestError
from corral.guest.tar import CHUNK, DIRECTORY, HARDLINK, SYMLINK, Member, TarReader

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def info(name: str, kind: bytes = tarfile.REGTYPE, *, size: int = 0, link: str = "",
         mode: int = 0o644, mtime: int = 1_700_000_000) -> tarfile.TarInfo:  # fmt: skip
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname, member.mode, member.mtime = (
        kind, size, link, mode, mtime
    )  # fmt: skip
    return member


def make_tar(members: list[tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buf.getvalue()


def pieces(data: bytes, size: int):
    """A read(n) that hands out at most `size` bytes a call, as a slow channel does."""
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, size))


def read_all(data: bytes, size: int = 1 << 16) -> list[tuple[Member, bytes]]:
    reader = TarReader(pieces(data, size))
    return [(m, b"".join(reader.data())) for m in reader]


LONG = "d" * 120 + "/" + "e" * 150 + "/" + "f" * 99
TREE = [
    (info("dir/", DIRECTORY, mode=0o755), b""),
    (info("dir/file", size=5, mode=0o600), b"hello"),
    (info(f"{LONG}/big", size=CHUNK + 3), b"x" * (CHUNK + 3)),
    (info("dir/empty"), b""),
    (info("dir/link", SYMLINK, link="file"), b""),
    (info("dir/longlink", SYMLINK, link="../" + LONG), b""),
    (info("dir/hard", HARDLINK, link="dir/file"), b""),
    (info("dir/\u00e9t\u00e9", size=2), b"ok"),
]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_reads_what_tarfile_writes(fmt: str) -> None:
    members = TREE if fmt != "ustar" else [m for m in TREE if LONG not in m[0].name + m[0].linkname]
    data = make_tar(members, FORMATS[fmt])
    for size in (1 << 16, 7):  # whole blocks at a time, or a few bytes
        got = read_all(data, size)
        assert [(m.name.rstrip("/"), m.type, m.linkname) for m, _ in got] == [
            (i.name.rstrip("/"), i.type, i.linkname) for i, _ in members
        ]
        assert [d for _, d in got] == [d if i.isreg() else b"" for i, d in members]
        assert got[1][0].mode == 0o600 and got[1][0].mtime == 1_700_000_000


def test_big_numbers_in_base_256_and_skipped_data() -> None:
    big = 8**11 + 5  # past what 11 octal digits hold: GNU writes it in base 256
    data = make_tar([(info("a", size=3, mtime=big), b"abc"), (info("b", size=1), b"z")])
    reader = TarReader(pieces(data, 100))
    first = next(reader)
    assert first.mtime == big
    second = next(reader)  # the first member's data is skipped unread
    assert (second.name, b"".join(reader.data())) == ("b", b"z")
    assert list(reader) == [] and reader.ended


def end(data: bytes) -> bytes:
    return data + bytes(1024)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "has no end"),
        (b"not a tar at all" * 64, "a header checksum is wrong"),
        (make_tar([(info("a", size=600), b"x" * 600)])[:1000], "cut short"),
        (make_tar([(info("a"), b"")])[:512], "has no end"),
        (make_tar([(info("a"), b"")])[:700], "cut short"),
    ],
)
def test_broken_streams_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(GuestError, match=message) as exc:
        read_all(data)
    assert "\n" not in str(exc.value)


def header(name: bytes, kind: bytes, size: int, *, size_field: bytes | None = None) -> bytes:
    """A ustar header built by hand, for what tarfile would never write."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = size_field or b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_hostile_headers_are_refused() -> None:
    negative = header(b"a", b"0", 0, size_field=b"\xff" * 12)
    with pytest.raises(GuestError, match="negative size"):
        read_all(end(negative))
    bad_octal = header(b"a", b"0", 0, size_field=b"0000000009x\0")
    with pytest.raises(GuestError, match="malformed size"):
        read_all(end(bad_octal))
    huge = header(b"././@LongLink", b"L", 1 << 30)
    with pytest.raises(GuestError, match="extended header of 1073741824 bytes"):
        read_all(end(huge))
    pax = b"99 path=x\n"
    broken = header(b"pax", b"x", len(pax)) + pax.ljust(512, b"\0") + header(b"a", b"0", 0)
    with pytest.raises(GuestError, match="malformed pax header"):
        read_all(end(broken))


def test_pax_records_override_the_header() -> None:
    member = info("short")
    member.pax_headers = {"path": "a/" + "p" * 300, "linkpath": "ignored-for-files"}
    member.size = 3
    got = read_all(make_tar([(member, b"abc")], tarfile.PAX_FORMAT))
    assert got[0][0].name == "a/" + "p" * 300 and got[0][1] == b"abc"


@given(st.lists(st.tuples(st.from_regex(r"[a-z]{1,5}(/[a-z]{1,5}){0,3}", fullmatch=True),
                          st.binary(max_size=2000)), max_size=6),
       st.sampled_from(list(FORMATS.values())), st.integers(1, 1000))  # fmt: skip
@settings(max_examples=100)
def test_any_tar_of_files_reads_back(files: list[tuple[str, bytes]], fmt: int, size: int) -> None:
    members = [(info(name, size=len(data)), data) for name, data in files]
    got = read_all(make_tar(members, fmt), size)
    assert [(m.name, d) for m, d in got] == files
