"""Managing stored images: tag, convert, resize, export, remove and prune.

Blobs are immutable and content-addressed, so every change makes a new blob and moves the name;
instances and layers that stand on the old blob keep it until garbage collection finds that
nothing needs it any more.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from corral.errors import Conflict, InvalidInput
from corral.fsutil import CHUNK, atomic_file, pid_alive
from corral.image.layers import save_image
from corral.image.manifest import Manifest, check_image_name, now
from corral.image.needs import Holders, ImageContext
from corral.image.qemu_img import FORMATS
from corral.units import format_size

_AGE_RE = re.compile(r"^(\d+)([smhdw])$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """'30m', '12h', '7d', '2w' -> timedelta."""
    match = _AGE_RE.match(text.strip())
    if not match:
        raise InvalidInput(f"invalid age {text!r}: expected a number with s, m, h, d or w")
    return timedelta(seconds=int(match[1]) * _AGE_UNITS[match[2]])


def dependants(ctx: ImageContext, manifest: Manifest) -> list[str]:
    """Names of images layered on this image's blob (not counting other names for it)."""
    return sorted(
        m.name
        for m in ctx.store.list()
        if m.digest != manifest.digest and manifest.digest in ctx.store.chain(m.digest)[1:]
    )


def tag(ctx: ImageContext, name: str, new_name: str) -> Manifest:
    """Give an image a second name (the same blob)."""
    manifest = ctx.store.get(name)
    check_image_name(new_name)
    if ctx.store.exists(new_name):
        raise Conflict(f"image {new_name!r} already exists")
    tagged = manifest.replace(name=new_name, created_at=now(), last_used_at=None)
    ctx.store.save(tagged)
    return tagged


def convert(
    ctx: ImageContext, name: str, fmt: str, *, compress: bool = False, as_name: str | None = None
) -> Manifest:
    """Rewrite an image as a standalone qcow2 or raw file (optionally compressed qcow2)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unsupported format {fmt!r}: choose qcow2 or raw")
    if compress and fmt != "qcow2":
        raise InvalidInput("only qcow2 images can be compressed")
    manifest = ctx.store.get(name)
    target = _target_name(ctx, name, as_name)
    tmp = ctx.store.new_tmp_path()
    try:
        ctx.qemu_img.convert(
            ctx.store.blob(manifest.digest), manifest.format, tmp, fmt, compress=compress
        )
        return save_image(
            ctx, tmp, target, parent=None, like=manifest, source=f"convert:{name}",
            replace=target == name, fmt=fmt,
        )  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)


def resize(ctx: ImageContext, name: str, size: int, *, as_name: str | None = None) -> Manifest:
    """Grow an image's virtual size: a thin qcow2 layer of the new size on the old blob."""
    manifest = ctx.store.get(name)
    if size < manifest.virtual_size:
        raise InvalidInput(
            f"{format_size(size)} is smaller than image {name!r} "
            f"({format_size(manifest.virtual_size)}); images are never shrunk"
        )
    target = _target_name(ctx, name, as_name)
    if size == manifest.virtual_size and target == name:
        return manifest
    tmp = ctx.store.new_tmp_path()
    try:
        ctx.qemu_img.create_on(tmp, ctx.store.blob(manifest.digest), manifest.format, size)
        return save_image(
            ctx, tmp, target, parent=manifest, like=manifest, source=f"resize:{name}",
            replace=target == name,
        )  # fmt: skip
    finally:
        tmp.unlink(missing_ok=True)


def _target_name(ctx: ImageContext, name: str, as_name: str | None) -> str:
    if as_name is None or as_name == name:
        return name
    check_image_name(as_name)
    if ctx.store.exists(as_name):
        raise Conflict(f"image {as_name!r} already exists")
    return as_name


def export(
    ctx: ImageContext,
    name: str,
    path: Path,
    *,
    fmt: str | None = None,
    compress: bool = False,
    force: bool = False,
    with_state: bool = False,
) -> list[Path]:
    """Write an image as one standalone, flattened file at `path` (written, then renamed);
    with_state, a warm image's saved state too, beside it as `<path>.state`. Which files.

    `path` is the local user's own choice; only the temporary files next to it are guarded.
    """
    manifest = ctx.store.get(name)
    if with_state and manifest.warm is None:
        raise InvalidInput(f"image {name!r} is not warm: it has no saved state to export")
    fmt = fmt or "qcow2"
    if fmt not in FORMATS:
        raise InvalidInput(f"unsupported format {fmt!r}: choose qcow2 or raw")
    if compress and fmt != "qcow2":
        raise InvalidInput("only qcow2 images can be compressed")
    if path.is_dir():
        path = path / f"{name}.{fmt}"
    state = path.with_name(path.name + ".state") if with_state else None
    for target in (path, state):
        if target is not None and target.exists() and not force:
            raise Conflict(f"{target} already exists", hint="use --force to overwrite it")
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        raise InvalidInput(f"no such directory: {path.parent}") from None
    try:
        _export_into(ctx, manifest, dir_fd, path, fmt, compress)
        if state is not None and manifest.warm is not None:
            _copy_into(ctx.store.blob(manifest.warm.state), dir_fd, state)
    finally:
        os.close(dir_fd)
    return [path] if state is None else [path, state]


def _export_into(
    ctx: ImageContext, manifest: Manifest, dir_fd: int, path: Path, fmt: str, compress: bool
) -> None:
    """qemu-img writes a new file made exclusively (a link planted in a shared directory is
    never followed), named to it by descriptor; then it is renamed into place."""
    try:
        with atomic_file(dir_fd, path.name, suffix=".corral-export") as fd:
            ctx.qemu_img.convert(
                ctx.store.blob(manifest.digest), manifest.format, fd, fmt, compress=compress
            )
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None


def _copy_into(blob: Path, dir_fd: int, path: Path) -> None:
    """Copy a blob to a new file made exclusively beside `path`, then renamed to it."""
    try:
        with atomic_file(dir_fd, path.name, suffix=".corral-export") as fd, blob.open("rb") as src:
            # In the kernel, and reflinked where the filesystem can.
            while os.copy_file_range(src.fileno(), fd, CHUNK):
                pass
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from None


def remove(ctx: ImageContext, name: str, *, holders: Holders, force: bool = False) -> list[str]:
    """Forget an image name; return the blobs garbage collection freed.

    Refused while instances use it or other images are layered on it, unless force: then
    the name goes and the data stays for as long as something stands on it.
    """
    manifest = ctx.store.get(name)
    others = [m for m in ctx.store.list() if m.digest == manifest.digest and m.name != name]
    if not others and not force:
        on_it = dependants(ctx, manifest)
        if on_it:
            raise Conflict(
                f"image {name!r} has dependants: {', '.join(on_it)}",
                hint="remove them first, or use --force (their data stays)",
            )
    users = () if others else holders.users.get(manifest.digest, ())
    ctx.store.remove(name, users=users, force=force)
    return ctx.store.collect_garbage(holders.keep)


@dataclass(frozen=True)
class Pruned:
    name: str
    last_used: datetime
    freed: int


def _needed_bytes(ctx: ImageContext, manifests: list[Manifest], holders: Holders) -> int:
    """What the store would hold with only these images (and what instances need)."""
    roots = set(holders.keep) | {d for m in manifests for d in m.blobs()}
    needed = {d for root in roots for d in ctx.store.chain(root)}
    return sum(ctx.store.blob(d).stat().st_size for d in needed if ctx.store.blob(d).exists())


STAGE_PREFIX = "tmp-build-"


def forget_abandoned_stages(ctx: ImageContext) -> list[str]:
    """Drop the temporary names of builds whose process is gone (killed mid-build); which.
    Their blobs go with the next garbage collection, like any unused blob."""
    gone = []
    for path in ctx.home.manifests.glob(f"{STAGE_PREFIX}*.json"):
        pid = path.name.removeprefix(STAGE_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            gone.append(path.name.removesuffix(".json"))
    return sorted(gone)


def prune(
    ctx: ImageContext,
    *,
    holders: Holders,
    older_than: timedelta | None = None,
    keep_bytes: int | None = None,
    dry_run: bool = False,
) -> list[Pruned]:
    """Remove unused images, least recently used first.

    Unused: no instance stands on it and no remaining image is layered on it (so removing a
    leaf can free its parent in turn). With older_than, only images unused for longer than
    that; with keep_bytes, stop once the store is that small. At least one must be given.
    """
    if older_than is None and keep_bytes is None:
        raise InvalidInput("say what to prune: --older-than AGE and/or --keep-bytes SIZE")
    if not dry_run and forget_abandoned_stages(ctx):
        ctx.store.collect_garbage(holders.keep)
    used = holders.users
    remaining = ctx.store.list()
    pruned: list[Pruned] = []
    while True:
        size = _needed_bytes(ctx, remaining, holders)
        if keep_bytes is not None and size <= keep_bytes:
            break
        below = {d for m in remaining for d in ctx.store.chain(m.digest)[1:]}
        candidates = [
            (m.last_used_at or m.created_at, m)
            for m in remaining
            if m.digest not in used
            and m.digest not in below
            and (older_than is None or now() - (m.last_used_at or m.created_at) >= older_than)
        ]
        if not candidates:
            break
        last, victim = min(candidates, key=lambda c: c[0])
        remaining = [m for m in remaining if m.name != victim.name]
        if not dry_run:
            remove(ctx, victim.name, holders=holders)
        pruned.append(Pruned(victim.name, last, size - _needed_bytes(ctx, remaining, holders)))
    return pruned
