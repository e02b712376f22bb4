"""Derived images (configured, snapshotted, resized) stored as qcow2 layers on their parent.

A layer's backing file is its parent's bare digest: qemu resolves it next to the layer, in the
blob directory, so a layer's bytes (and so its digest) do not depend on where the store lives.
A layer is kept only when it saves space over a flattened copy; the chain is recorded in the
manifest (`parent`) and checked against the file before anything boots from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral.errors import Conflict
from corral.fsutil import hash_file
from corral.image.manifest import Manifest, now
from corral.image.needs import ImageContext

# Keep a layer unless it is nearly as large as everything below it: then a flat copy costs no
# more space and reads faster.
LAYER_MAX_FRACTION = 0.9


class Base(Protocol):
    """What a layer needs of its parent: the blob and its format (a Manifest will do)."""

    @property
    def digest(self) -> str: ...

    @property
    def format(self) -> str: ...


@dataclass(frozen=True)
class Blob:
    digest: str
    format: str


def publish(
    ctx: ImageContext, tmp: Path, *, parent: Base | None, flatten: bool = False, fmt: str = "qcow2"
) -> tuple[str, str, int, str | None]:
    """Publish a qcow2 written under images/tmp; return (digest, format, size, parent digest).

    `tmp` is either standalone or backed by `parent`'s blob (by absolute path, as qemu
    wrote it). It is relinked to the parent's bare digest, or flattened when a layer would
    not save space (or `flatten` is asked for).
    """
    if parent is not None:
        layer_size = tmp.stat().st_size
        # A flat copy would hold the whole chain: compare with what the chain occupies.
        parent_size = sum(ctx.store.blob(d).stat().st_size for d in ctx.store.chain(parent.digest))
        if flatten or layer_size > LAYER_MAX_FRACTION * parent_size:
            flat = ctx.store.new_tmp_path()
            try:
                ctx.qemu_img.convert(tmp, "qcow2", flat, "qcow2")
                flat.replace(tmp)
            finally:
                flat.unlink(missing_ok=True)
            parent = None
        else:
            ctx.qemu_img.rebase_unsafe(tmp, parent.digest, parent.format)
    info = ctx.qemu_img.info(tmp, fmt)
    digest = hash_file(tmp)
    if parent is not None:
        ctx.store.set_parent(digest, parent.digest)  # before the blob appears: never orphaned
    ctx.store.add_blob_file(tmp, digest)
    return digest, fmt, info.virtual_size, parent.digest if parent else None


def save_image(
    ctx: ImageContext,
    tmp: Path,
    name: str,
    *,
    parent: Base | None,
    like: Manifest | None = None,
    source: str,
    flatten: bool = False,
    replace: bool = False,
    fmt: str = "qcow2",
    **fields: object,
) -> Manifest:
    """Publish `tmp` and name it; kernel, initrd, cmdline and user come from `like` unless given."""
    if not replace and ctx.store.exists(name):
        raise Conflict(f"image {name!r} already exists")
    digest, fmt, size, parent_digest = publish(ctx, tmp, parent=parent, flatten=flatten, fmt=fmt)
    inherited: dict[str, object] = {}
    if like is not None:
        inherited = {
            "kernel": like.kernel,
            "initrd": like.initrd,
            "cmdline": like.cmdline,
            "default_user": like.default_user,
        }
    manifest = Manifest(
        name=name,
        digest=digest,
        format=fmt,
        virtual_size=size,
        file_size=ctx.store.blob(digest).stat().st_size,
        source=source,
        parent=parent_digest,
        **{**inherited, **fields},  # type: ignore[arg-type]  # Manifest's optional fields, by name
    )
    ctx.store.save(manifest)
    return manifest


def touch(ctx: ImageContext, manifest: Manifest) -> None:
    """Record a use (launch, derivation): prune removes the least recently used first."""
    ctx.store.save(manifest.replace(last_used_at=now()))
