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
class WarmRequirements(Record):
    """What the machine restoring a saved state must be. Defined here, where warm images are
    stored; machine.warm computes and compares it (as machine.warm.Requirements)."""

    qemu_version: str
    machine: str
    cpu_model: str
    accelerator: str
    cpus: int
    memory_mib: int
    devices: tuple[str, ...]

    def describe(self) -> str:
        return (
            f"QEMU {self.qemu_version}, machine {self.machine}, cpu {self.cpu_model}, "
            f"{self.accelerator}, {self.cpus} cpus, {self.memory_mib} MiB, "
            f"devices {' '.join(self.devices)}"
        )


@dataclass(frozen=True, kw_only=True)
class WarmState(Record):
    """A running machine saved with the image's disk: its RAM and device state (a QEMU
    migration stream) is the blob `state`; the disk at that instant is the manifest's blob."""

    state: str  # sha256 hex of the migration stream blob
    state_size: int
    requirements: WarmRequirements
    agent: bool  # the guest answers a QEMU guest agent (a clone is re-identified through it)
    saved_at: datetime = field(default_factory=now)


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
    warm: WarmState | None = None  # a saved running state: launches restore it

    def blobs(self) -> tuple[str, ...]:
        """Every blob this image needs directly (the disk's backing chain aside)."""
        named = (self.digest, self.kernel, self.initrd, self.warm.state if self.warm else None)
        return tuple(d for d in named if d)
