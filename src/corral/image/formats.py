"""Which disk format a file is, read from its first bytes: never by asking qemu-img to probe.

qemu-img's probing opens what a header names (a vmdk descriptor's extents, for one), so a
hostile image could make it open host files before corral refuses the format. corral takes
qcow2 and raw; the header decides which, and known other formats are refused by their magic.
"""

from __future__ import annotations

from pathlib import Path

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
    """disk_format of a file's header."""
    with open(path, "rb") as f:
        return disk_format(f.read(HEAD_BYTES), label)
