"""Who stands on the image store: instances and build layers.

The store's garbage collection and `image rm` must keep what they use, but image/ sits below
both and cannot look at them; this module sits above both and tells it (image.needs.Holders).
"""

from __future__ import annotations

from pathlib import Path

from corral.builds.store import BuildStore
from corral.context import Context
from corral.image.needs import Holders
from corral.instance import registry


def image_holders(ctx: Context) -> Holders:
    """The instances on each blob, and every blob instances and build layers need."""
    users: dict[str, list[str]] = {}
    keep: set[str] = BuildStore(ctx.home).referenced_blobs()
    for _, record in registry.records(ctx.home):
        if not record.diskless:
            users.setdefault(record.image_digest, []).append(record.name)
            keep.add(record.image_digest)
        if record.boot is not None:
            for path in (record.boot.kernel, record.boot.initrd):
                if path and Path(path).parent == ctx.home.blobs:
                    keep.add(Path(path).name)
    return Holders({d: tuple(names) for d, names in users.items()}, frozenset(keep))
