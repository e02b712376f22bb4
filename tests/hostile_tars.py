"""Tar archives as a hostile guest would send them, made with tarfile for the tests."""

from __future__ import annotations

import io
import tarfile

from corral.guest.tar import DIRECTORY, SYMLINK

TarMember = tuple[tarfile.TarInfo, bytes]


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "",
           mode: int = 0o644) -> TarMember:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, len(data), link, mode
    info.uid = info.gid = 12345  # never applied: nothing here changes owners
    return info, data


def tar(*members: TarMember) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for info, data in members:
            out.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def climbing_chain() -> list[TarMember]:
    """CVE-2025-4517's shape: directories with names near NAME_MAX, each shadowed by a short
    symlink to it, so a path through the links is short while its real path passes PATH_MAX;
    then a link whose `..` climb from there, and a file written through the result."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[TarMember] = []
    path = ""
    for step in steps:
        members.append(member(f"{path}{comp}", DIRECTORY))
        members.append(member(f"{path}{step}", SYMLINK, link=comp))
        path = f"{path}{comp}/"
    linkpath = "/".join(steps) + "/" + "l" * 254
    members.append(member(linkpath, SYMLINK, link="../" * len(steps)))
    members.append(member("escape", SYMLINK, link=f"{linkpath}/../outside"))
    members.append(member("escape/etc/passwd", data=b"owned\n"))
    return members
