"""What a recipe hands to the image store: a disk plus what direct kernel boot needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BuiltImage:
    """What a builder hands to the image store: a disk plus what direct kernel boot needs."""

    disk: Path  # qcow2 (or raw) disk image
    disk_format: str  # "qcow2" or "raw"
    kernel: Path | None
    initrd: Path | None
    cmdline: str | None
    default_user: str
