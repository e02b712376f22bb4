"""The image manifest: what the store knows about one named image."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from corral.errors import InvalidInput
from corral.records import Record

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")


def check_image_name(name: str) -> str:
    """Image names become file names: letters, digits and . _ : + - only, no leading dot."""
    if not _NAME_RE.fullmatch(name):  # `$` would let a final newline through
        raise InvalidInput(
            f"invalid image name {name!r}: use letters, digits and . _ : + - (at most 128)"
        )
    return name


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Manifest(Record):
    """One named image. Blobs are named by digest, so identical content is stored once."""

    name: str
    digest: str  # sha256 hex of the disk blob
    format: str  # qcow2 | raw, detected once at import and passed to QEMU ever after
    virtual_size: int
    file_size: int
    kernel: str | None = None  # sha256 hex of a kernel blob
    initrd: str | None = None
    cmdline: str | None = None
    default_user: str = "root"
    source: str = ""
    parent: str | None = None  # digest of the blob this qcow2 overlay is backed by, if any
    created_at: datetime = field(default_factory=now)
    last_used_at: datetime | None = None  # last launch or derivation; prune goes by it
