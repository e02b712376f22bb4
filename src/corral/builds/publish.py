"""Turning a build result into an image: `corral image import-build` and `launch build:ID`."""

from __future__ import annotations

from corral.builds.store import BuildStore
from corral.context import Context
from corral.errors import Conflict
from corral.image.layers import Blob, save_image
from corral.image.manifest import Manifest, check_image_name

PREFIX = "build:"


def import_build(ctx: Context, layer: str, name: str, *, replace: bool = False) -> Manifest:
    """An image holding a build layer's disk: a layer on the spec's base image (only what
    the build changed is copied), booting like the base image."""
    check_image_name(name)
    if ctx.store.exists(name) and not replace:
        raise Conflict(f"image {name!r} already exists")
    store = BuildStore(ctx.home)
    layer = store.resolve(layer)
    meta = store.meta(layer)
    boot = meta.boot
    base = Blob(boot.digest, boot.format)
    tmp = ctx.store.new_tmp_path()
    try:
        disk, fmt = store.disk(layer, ctx.home.blobs)
        # An empty overlay on the layer, then a safe rebase onto the base image: what every
        # layer of the chain changed is written into it (a convert with -B would only copy
        # what the top layer holds).
        size = ctx.qemu_img.info(disk, fmt).virtual_size
        ctx.qemu_img.create_on(tmp, disk.resolve(), fmt, size)
        ctx.qemu_img.rebase(tmp, ctx.store.blob(boot.digest), boot.format)
        return save_image(
            ctx, tmp, name, parent=base, source=f"build:{layer}", replace=replace,
            kernel=boot.kernel, initrd=boot.initrd, cmdline=boot.cmdline,
            default_user=boot.user,
        )  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)


def image_for(ctx: Context, reference: str) -> str:
    """The image name to launch: `build:ID` is imported (once) as image build-<ID prefix>."""
    if not reference.startswith(PREFIX):
        return reference
    store = BuildStore(ctx.home)
    layer = store.resolve(reference.removeprefix(PREFIX))
    name = f"build-{layer[:16]}"
    if not ctx.store.exists(name):
        import_build(ctx, layer, name)
    return name
