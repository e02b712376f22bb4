"""Snapshots of an instance's disk: as a new image, or internal qcow2 snapshots.

A new image is a layer on the instance's image: only what the instance changed is copied. A
running VM is saved with a QMP drive-backup job (Vm.backup), which copies a point-in-time view
of its overlay while the guest keeps running; a stopped VM's overlay is copied with qemu-img
convert against the image as backing file.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.context import Context
from corral.errors import Conflict, InvalidInput, NotFound
from corral.fsutil import hash_file
from corral.image.layers import Blob, save_image
from corral.image.manifest import Manifest, check_image_name
from corral.instance import registry
from corral.instance.record import InstanceRecord
from corral.instance.state import observe
from corral.layout import InstanceFiles
from corral.machine.vm import Vm

JOB_ID = "corral-snapshot"


def boot_blobs(ctx: Context, files: InstanceFiles, record: InstanceRecord) -> dict[str, Any]:
    if record.boot is None:
        return {}
    out: dict[str, Any] = {"cmdline": record.boot.cmdline}
    for key, path in (("kernel", record.boot.kernel), ("initrd", record.boot.initrd)):
        if path is None:
            continue
        full = Path(path) if Path(path).is_absolute() else files.dir / path
        if full.parent == ctx.home.blobs:
            out[key] = full.name
        else:
            tmp = ctx.store.new_tmp_path()
            tmp.write_bytes(full.read_bytes())
            digest = hash_file(tmp)
            ctx.store.add_blob_file(tmp, digest)
            out[key] = digest
    return out


def snapshot_as_image(
    ctx: Context, name: str, image_name: str, *, flatten: bool = False
) -> Manifest:
    """Save the instance's disk as a new image that launch accepts (a layer on its image)."""
    check_image_name(image_name)
    files, record = registry.load_named(ctx.home, name)
    if ctx.store.exists(image_name):
        raise Conflict(f"image {image_name!r} already exists")
    if record.diskless:
        raise InvalidInput(f"instance {name!r} has no disk to save: it boots from its kernel")
    base = Blob(record.image_digest, record.image_format)
    with registry.instance_lock(files):
        record = registry.load(files)
        seen = observe(record, files)
        state = seen.state
        tmp = ctx.store.new_tmp_path()
        try:
            if state in ("running", "paused") and seen.pid is not None:
                asyncio.run(Vm(files, seen.pid).backup("disk0", tmp, job_id=JOB_ID))
            elif state in ("stopped", "crashed"):
                ctx.qemu_img.convert(
                    files.disk, "qcow2", tmp, "qcow2",
                    backing=ctx.store.blob(base.digest), backing_fmt=base.format,
                )  # fmt: skip
            else:
                raise Conflict(f"instance {name!r} is {state}; wait for it to settle")
            return save_image(
                ctx, tmp, image_name, parent=base, source=f"snapshot:{name}", flatten=flatten,
                default_user=record.ssh_user, **boot_blobs(ctx, files, record),
            )  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)


def list_tags(ctx: Context, name: str) -> list[dict[str, Any]]:
    files, _ = registry.load_named(ctx.home, name)
    info = ctx.qemu_img.info(files.disk, "qcow2")
    return [
        {
            "tag": s["name"],
            "created": datetime.fromtimestamp(s.get("date-sec", 0), UTC).isoformat(),
            "vm_state_size": s.get("vm-state-size", 0),
        }
        for s in info.snapshots
    ]


def _change_tag(ctx: Context, name: str, tag: str, action: str, *, exists: bool) -> None:
    """Run one qemu-img snapshot action on a stopped VM's disk, checking the tag first."""
    files, _ = registry.load_named(ctx.home, name)
    with registry.instance_lock(files):
        state = observe(registry.load(files), files).state
        if state not in ("stopped", "crashed"):
            raise Conflict(
                f"instance {name!r} is {state}; internal snapshots need a stopped VM",
                hint=f"corral stop {name}",
            )
        present = any(s["tag"] == tag for s in list_tags(ctx, name))
        if present and not exists:
            raise Conflict(f"instance {name!r} already has a snapshot {tag!r}")
        if exists and not present:
            raise NotFound(f"instance {name!r} has no snapshot {tag!r}")
        ctx.qemu_img.snapshot(files.disk, action, tag)


def create_tag(ctx: Context, name: str, tag: str) -> None:
    _change_tag(ctx, name, tag, "-c", exists=False)


def restore_tag(ctx: Context, name: str, tag: str) -> None:
    _change_tag(ctx, name, tag, "-a", exists=True)


def delete_tag(ctx: Context, name: str, tag: str) -> None:
    _change_tag(ctx, name, tag, "-d", exists=True)
