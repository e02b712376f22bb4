"""Warm states: a build VM booted once on a base layer and saved running, restored by builds.

A build whose first uncached step stands on its base image starts its VM by restoring the
warm state of that image (and of that VM shape: cpus, memory, number of cache disks) instead of
booting it. The state is made on first use (or by `corral build warm IMAGE`): the build VM is
booted to ready on a new overlay of the base image, with blank stand-ins for its cache disks,
and saved (machine.migrate.save_state); the overlay as it stood at the save is the warm
state's disk, on which the first step's layer then stands (the store keeps the state as long as
a layer does; see store.py). A restored VM is the saved one: same QEMU, machine, devices in the
same order. A state whose requirements differ from this launch's (another QEMU, accelerator,
size: machine.warm.difference), or that once failed to restore, is passed over and another is
made; the old one goes when `build prune` finds nothing standing on it.

Nothing about a build's results changes: step IDs are made from the spec alone, and what the
steps see is the same disk and the same booted guest, with its clock set to now.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from corral.builds.store import CACHE_DISK_SIZE, Boot, BuildStore, WarmMeta
from corral.builds.vm import BuildVm, Sink, machine_spec
from corral.context import Context
from corral.guest.ssh_keys import ensure_corral_key
from corral.layout import MachineFiles
from corral.machine.warm import Requirements, difference, requirements
from corral.records import RecordError


@dataclass(frozen=True)
class Shape:
    """What a build VM is, besides its disk: a restore needs the very same."""

    cpus: int
    memory_mib: int
    cache_slots: int  # how many cache disks it has


def family(boot: Boot, base: str, shape: Shape, login_key: str) -> str:
    """The ID of what a warm state serves: builds from `base` in a VM of `shape`, logged into
    with `login_key`. States of one family differ only in what they require of QEMU."""
    material = json.dumps([base, asdict(boot), asdict(shape), login_key], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def slot_names(shape: Shape) -> list[str]:
    """Names of the blank cache disks at the save (sorted as the machine orders caches)."""
    return [f"slot{i:02d}" for i in range(shape.cache_slots)]


def wanted(ctx: Context, boot: Boot, shape: Shape) -> Requirements:
    """What this host's QEMU would need of a state for a build VM of `shape` (paths and ports
    play no part in it)."""
    nowhere = Path("/nonexistent")
    caches = {name: nowhere / name for name in slot_names(shape)}
    spec = machine_spec(ctx, MachineFiles(nowhere), boot, nowhere / "disk.qcow2", caches,
                        shape.cpus, shape.memory_mib, 22, incoming=True)  # fmt: skip
    return requirements(spec, ctx.host.qemu.version)


def usable(store: BuildStore, meta: WarmMeta, want: Requirements) -> bool:
    if not store.warm_usable(meta.id):
        return False
    try:
        saved = Requirements.from_dict(meta.requirements)
    except (RecordError, TypeError, ValueError):
        return False
    return difference(saved, want) is None


def find(store: BuildStore, fam: str, want: Requirements) -> WarmMeta | None:
    """The newest state of the family that this launch can restore."""
    found = [m for m in store.warm_states() if m.family == fam and usable(store, m, want)]
    return max(found, key=lambda m: m.created_at, default=None)


@dataclass(frozen=True)
class Found:
    meta: WarmMeta
    made: bool  # made just now


async def ensure(
    ctx: Context,
    store: BuildStore,
    boot: Boot,
    base: str,
    shape: Shape,
    *,
    timeout: float = 300,
    say: Callable[[str], None] = lambda _: None,
    console: Sink | None = None,
) -> Found:
    """The warm state for builds from `base` in a VM of `shape`: found, or made now.

    Makers of one family take turns (a lock in builds/locks), so two builds that need the
    same state make it once.
    """
    key = ensure_corral_key(ctx.home.ssh_key)
    fam = family(boot, base, shape, key)
    want = wanted(ctx, boot, shape)
    found = find(store, fam, want)
    if found is None:
        store.ensure()
        fd = os.open(store.locks / f"warm-{fam}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            found = find(store, fam, want)
            if found is None:
                say(f"(making the warm state of {boot.image}: one boot, then a save)\n")
                meta = await make(ctx, store, boot, base, shape, fam, timeout=timeout,
                                  console=console)  # fmt: skip
                return Found(meta, True)
        finally:
            os.close(fd)
    store.touch_warm(found.id)
    return Found(found, False)


async def make(
    ctx: Context,
    store: BuildStore,
    boot: Boot,
    base: str,
    shape: Shape,
    fam: str,
    *,
    timeout: float = 300,
    console: Sink | None = None,
) -> WarmMeta:
    """Boot a build VM on a new overlay of the base image, save it, and publish the state.

    Everything is made in a temporary directory of the warm store and published by one
    rename: a build killed on the way leaves only that directory, which the next build
    removes (store.purge_tmp), and the next build that needs the state makes it anew.
    """
    tmp = store.new_warm_tmp()
    try:
        blob = ctx.store.blob(boot.digest)
        size = ctx.qemu_img.info(blob, boot.format).virtual_size
        disk = tmp / "disk.qcow2"
        await asyncio.to_thread(ctx.qemu_img.create_on, disk, blob, boot.format, size)
        slots = {name: tmp / f"{name}.qcow2" for name in slot_names(shape)}
        for path in slots.values():
            await asyncio.to_thread(ctx.qemu_img.create, path, CACHE_DISK_SIZE)
        vm = await BuildVm.boot(ctx, store, boot, disk, caches=slots, cpus=shape.cpus,
                                memory_mib=shape.memory_mib, timeout=timeout,
                                console=console)  # fmt: skip
        try:
            assert vm.spec is not None
            saved = requirements(vm.spec, ctx.host.qemu.version)
            await vm.save(tmp / "state", tmp / "seed.iso")
        finally:
            await vm.close()
        for path in slots.values():
            path.unlink()
        meta = WarmMeta(
            id=secrets.token_hex(16), family=fam, base=base, boot=boot, cpus=shape.cpus,
            memory_mib=shape.memory_mib, cache_slots=shape.cache_slots,
            requirements=saved.to_dict(),
        )  # fmt: skip
        store.publish_warm(tmp, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return store.warm_meta(meta.id)


def check_cache_sizes(ctx: Context, caches: dict[str, Path]) -> str | None:
    """Why these cache disks cannot take the place of the blank stand-ins (a guest keeps the
    size it saw at the save), or None."""
    for name, path in caches.items():
        size = ctx.qemu_img.info(path, "qcow2").virtual_size
        if size != CACHE_DISK_SIZE:
            return f"cache {name!r} is {size} bytes, not {CACHE_DISK_SIZE}"
    return None
