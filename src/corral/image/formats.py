"""Which disk format a file is, read from its first bytes: never by asking qemu-img to probe.

qemu-img's probing opens what a header names (a vmdk descriptor's extents, for one), so a
hostile image could make it open host files before corral refuses the format. corral takes
qcow2 and raw; the header decides which, and known other formats are refused by their magic.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from corral.errors import InvalidInput

# Headers of formats corral does not take. Some of them name other files (a vmdk descriptor's
# extents), so the file is never handed to qemu-img to find out what it is.
_FOREIGN = (
    (0, b"QED\x00", "qed"),
    (0, b"KDMV", "vmdk"),
    (0, b"COWD", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"conectix", "vpc"),
    (0, b"vhdxfile", "vhdx"),
    (0, b"LUKS\xba\xbe", "luks"),
    (0, b"WithoutFreeSpace", "parallels"),
    (0, b"WithouFreSpacExt", "parallels"),
    (0, b"Bochs Virtual HD Image", "bochs"),
    (0, b"#!/bin/sh\n#V2.0 Format\n", "cloop"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
)
HEAD_BYTES = 512
_QCOW2_DATA_FILE = 1 << 2  # incompatible feature: the guest data lives in another file


def disk_format(head: bytes, label: str) -> str:
    """qcow2 or raw, read from the first bytes of a disk; other known formats are refused."""
    if head.startswith(b"QFI\xfb"):
        version = int.from_bytes(head[4:8], "big")
        if version in (2, 3):
            return "qcow2"
        raise InvalidInput(f"{label}: unsupported image format 'qcow' (version {version})")
    for offset, magic, name in _FOREIGN:
        if head[offset : offset + len(magic)] == magic:
            raise InvalidInput(
                f"{label}: unsupported image format {name!r} (need qcow2 or raw)",
                hint="convert it first: qemu-img convert -O qcow2 ...",
            )
    return "raw"


def file_format(path: Path, label: str) -> str:
    """disk_format of a file's header; a qcow2 that names another file is refused from its
    header alone, before qemu-img would open that file."""
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        fmt = disk_format(head, label)
        if fmt == "qcow2":
            _refuse_references(f, head, label)
    return fmt


def _refuse_references(f: BinaryIO, head: bytes, label: str) -> None:
    """qcow2 header: backing_file_offset (bytes 8-15) and, from version 3, the incompatible
    feature bit 2 (an external data file)."""
    offset = int.from_bytes(head[8:16], "big")
    if offset:
        size = min(int.from_bytes(head[16:20], "big"), 1023)
        f.seek(offset)
        name = f.read(size).decode(errors="replace")
        raise InvalidInput(
            f"{label}: refusing an image with a backing file ({name}): it points outside the store",
            hint="flatten it first: qemu-img convert -O qcow2 SRC DST",
        )
    version = int.from_bytes(head[4:8], "big")
    if version >= 3 and int.from_bytes(head[72:80], "big") & _QCOW2_DATA_FILE:
        raise InvalidInput(f"{label}: refusing a qcow2 with an external data file")
