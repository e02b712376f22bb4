"""The build layer store: one directory per published layer, named by the step's ID.

    builds/layers/<id>/disk.qcow2   the layer (a qcow2 whose backing file is its parent's)
    builds/layers/<id>/log          what the step printed (replayed on a cache hit)
    builds/layers/<id>/meta.json    parent, op, base image and boot details, sizes, times
    builds/layers/tmp-<rand>/       a step being built (a sibling, so relative backing names
                                    resolve the same before and after publication)
    builds/locks/<id>.lock, .log    held, and written live, while a step runs
    builds/caches/<name>.qcow2      persistent cache disks (and their locks)
    builds/run/<rand>/              a build VM's sockets and console

A layer's backing file is "../<parent-id>/disk.qcow2" (or, for the first step, the base
image's blob in the image store). Publication is one rename of the whole directory, so a crash
leaves either nothing or a complete layer. The base layer of a spec is just a meta.json: its
disk is the image blob.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.errors import CorralError, NotFound
from corral.fsutil import pid_alive, write_atomic
from corral.layout import Home


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Boot:
    """How to boot any layer of a spec: inherited from the base image."""

    image: str  # the image name the spec's `from` named
    digest: str  # its blob
    format: str
    kernel: str | None  # blob digests
    initrd: str | None
    cmdline: str | None
    user: str  # the image's default login user


@dataclass(frozen=True)
class LayerMeta:
    id: str
    parent: str | None  # None for a base layer
    op: str  # the op as obuilder prints it, or "(from IMAGE)"
    boot: Boot
    created_at: str = field(default_factory=_now)
    last_used_at: str = field(default_factory=_now)
    size: int = 0  # bytes of this layer's own disk file

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LayerMeta:
        data = json.loads(raw)
        return cls(**{**data, "boot": Boot(**data["boot"])})


class BuildStore:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.root = home.root / "builds"
        self.layers = self.root / "layers"
        self.locks = self.root / "locks"
        self.caches = self.root / "caches"
        self.runs = self.root / "run"

    def ensure(self) -> None:
        for path in (self.layers, self.locks, self.caches, self.runs):
            path.mkdir(parents=True, exist_ok=True)

    # --- layers ------------------------------------------------------------------------

    def layer_dir(self, layer_id: str) -> Path:
        return self.layers / layer_id

    def exists(self, layer_id: str) -> bool:
        return (self.layer_dir(layer_id) / "meta.json").is_file()

    def meta(self, layer_id: str) -> LayerMeta:
        try:
            return LayerMeta.from_json((self.layer_dir(layer_id) / "meta.json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"no build layer {layer_id!r}", hint="see: corral build ls") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise CorralError(f"build layer {layer_id} is damaged: {exc}") from exc

    def resolve(self, prefix: str) -> str:
        """A full layer ID from an ID or a unique prefix of one (at least 8 characters)."""
        if self.exists(prefix):
            return prefix
        found = [p.name for p in self.published() if p.name.startswith(prefix)] if len(
            prefix
        ) >= 8 else []  # fmt: skip
        if len(found) == 1:
            return found[0]
        raise NotFound(f"no build layer {prefix!r}" + (" (ambiguous)" if found else ""))

    def disk(self, layer_id: str, image_blobs: Path) -> tuple[Path, str]:
        """The disk of a layer (the image blob for a base layer) and its format."""
        meta = self.meta(layer_id)
        if meta.parent is None:
            return image_blobs / meta.boot.digest, meta.boot.format
        return self.layer_dir(layer_id) / "disk.qcow2", "qcow2"

    def log(self, layer_id: str) -> bytes:
        try:
            return (self.layer_dir(layer_id) / "log").read_bytes()
        except FileNotFoundError:
            return b""

    def touch(self, layer_id: str) -> None:
        with contextlib.suppress(NotFound, CorralError, OSError):
            meta = self.meta(layer_id)
            updated = LayerMeta(**{**asdict(meta), "boot": meta.boot, "last_used_at": _now()})
            write_atomic(self.layer_dir(layer_id) / "meta.json", updated.to_json())

    def published(self) -> list[Path]:
        if not self.layers.is_dir():
            return []
        return sorted(p for p in self.layers.iterdir() if not p.name.startswith("tmp-"))

    def all_meta(self) -> list[LayerMeta]:
        out = []
        for path in self.published():
            with contextlib.suppress(NotFound, CorralError):
                out.append(self.meta(path.name))
        return out

    def new_tmp(self) -> Path:
        """A directory for a step being built, named for this process (cleaned if it dies)."""
        self.ensure()
        path = self.layers / f"tmp-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir()
        return path

    def publish(self, tmp: Path, meta: LayerMeta, log: bytes) -> None:
        """Write the log and meta into tmp, then rename it to the layer's directory."""
        (tmp / "log").write_bytes(log)
        disk = tmp / "disk.qcow2"
        size = disk.stat().st_size if disk.exists() else 0
        final = LayerMeta(**{**asdict(meta), "boot": meta.boot, "size": size})
        write_atomic(tmp / "meta.json", final.to_json())
        target = self.layer_dir(meta.id)
        try:
            tmp.rename(target)
        except OSError:
            if not self.exists(meta.id):  # another build published the same step first
                raise
            shutil.rmtree(tmp, ignore_errors=True)

    def purge_tmp(self) -> None:
        """Remove step directories and VM run directories of processes that have died."""
        for parent, prefix in ((self.layers, "tmp-"), (self.runs, "")):
            if not parent.is_dir():
                continue
            for path in parent.iterdir():
                if not path.name.startswith(prefix):
                    continue
                pid = path.name.removeprefix(prefix).split("-", 1)[0]
                if not (pid.isdigit() and pid_alive(int(pid))):
                    shutil.rmtree(path, ignore_errors=True)

    def children(self) -> dict[str, list[str]]:
        kids: dict[str, list[str]] = {}
        for meta in self.all_meta():
            if meta.parent is not None:
                kids.setdefault(meta.parent, []).append(meta.id)
        return kids

    def remove(self, layer_id: str) -> None:
        """Remove one layer; refused while other layers stand on it."""
        layer_id = self.resolve(layer_id)
        kids = self.children().get(layer_id, [])
        if kids:
            raise CorralError(
                f"build layer {layer_id[:12]} has {len(kids)} child layer(s); remove them first"
            )
        with self.step_lock(layer_id, blocking=False):
            shutil.rmtree(self.layer_dir(layer_id), ignore_errors=True)

    def referenced_blobs(self) -> set[str]:
        """Image blobs the build layers stand on: image garbage collection must keep them."""
        keep: set[str] = set()
        for meta in self.all_meta():
            keep.update(d for d in (meta.boot.digest, meta.boot.kernel, meta.boot.initrd) if d)
        return keep

    # --- locks -------------------------------------------------------------------------

    @contextlib.contextmanager
    def step_lock(self, layer_id: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the lock of one step ID; yields False (without waiting) if busy and not blocking."""
        self.ensure()
        fd = os.open(self.locks / f"{layer_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def live_log(self, layer_id: str) -> Path:
        """Where the build running a step writes its output as it comes (others follow it)."""
        return self.locks / f"{layer_id}.log"

    def cache_disk(self, name: str) -> Path:
        return self.caches / f"{name}.qcow2"

    def describe(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.all_meta()]


def store_size(store: BuildStore) -> int:
    return sum(m.size for m in store.all_meta())


def prune(
    store: BuildStore,
    *,
    older_than_s: float | None = None,
    keep_bytes: int | None = None,
) -> list[LayerMeta]:
    """Remove layers, least recently used leaves first, until the limits hold.

    Callers hold the store lock exclusively, so no running build loses a layer it stands on.
    With older_than_s, only layers unused for longer; with keep_bytes, stop at that size.
    """
    removed: list[LayerMeta] = []
    now = datetime.now(UTC)
    while keep_bytes is None or store_size(store) > keep_bytes:
        kids = store.children()
        leaves = [m for m in store.all_meta() if m.id not in kids]
        if older_than_s is not None:
            leaves = [
                m for m in leaves
                if (now - datetime.fromisoformat(m.last_used_at)).total_seconds() >= older_than_s
            ]  # fmt: skip
        if not leaves:
            break
        victim = min(leaves, key=lambda m: m.last_used_at)
        shutil.rmtree(store.layer_dir(victim.id), ignore_errors=True)
        removed.append(victim)
    return removed
