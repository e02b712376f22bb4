"""Warm images: a running instance saved with its memory, and clones restored from one.

Saving pauses the VM once: its disk at that instant becomes a layer in the store (a QMP
drive-backup of the paused VM, like `snapshot --as`), its RAM and device state a second blob
(a QEMU migration into a file corral made exclusively under images/tmp and passed over QMP).
The manifest naming both is written last, so a save cut short at any point leaves blobs no
manifest names (garbage collection's) and files under images/tmp (purge_tmp's), never half a
warm image. The VM then runs on, or stops.

A clone restores instead of booting: its own overlay over the saved disk, its own seed (a
later cold boot is its own instance), QEMU started with `-incoming defer` and fed the state
from a read-only descriptor, then made into its own machine through the guest agent
(guest.identity). Whether a state fits the machine a launch asks for is decided before
anything is created (machine.warm.difference).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from corral.context import Context
from corral.errors import Conflict, CorralError, DeadlineExceeded, GuestError, InvalidInput
from corral.fsutil import hash_file
from corral.guest.userdata import parse_user_data
from corral.image.layers import Blob, save_image
from corral.image.manifest import Manifest, WarmState, check_image_name
from corral.instance import lifecycle, registry
from corral.instance.boot import machine_spec
from corral.instance.options import LaunchOptions
from corral.instance.record import InstanceRecord, NetworkNicRecord
from corral.instance.snapshot import boot_blobs
from corral.instance.state import observe
from corral.layout import InstanceFiles
from corral.machine import migrate, warm
from corral.machine.agent import GuestAgent
from corral.machine.spec import MachineSpec
from corral.machine.vm import Vm

JOB_ID = "corral-warm-disk"
AGENT_TIMEOUT = 15.0  # for a template's agent to answer before its save
# What the record says while a save holds the VM: left there if the save is killed outright,
# so `ls` shows the VM paused (as it may well be) rather than running.
INTERRUPTED = "held by a warm save that did not finish: corral resume continues it"


# --- saving -------------------------------------------------------------------------------


async def _accelerator(vm: Vm) -> str:
    """The accelerator QEMU really runs with (the host's choice may have changed since)."""
    kvm = await vm.execute("query-kvm")
    return "kvm" if kvm.get("enabled") else "tcg"


async def _agent_answers(files: InstanceFiles) -> bool:
    async with GuestAgent(files.agent) as agent:
        try:
            await agent.sync(timeout=AGENT_TIMEOUT)
        except (DeadlineExceeded, GuestError):
            return False
        return True


async def _save(vm: Vm, disk: Path, state: int, *, resume: bool) -> int:
    """Pause, copy the disk as it stands, migrate RAM and devices into `state`: the two are
    of the same instant because the VM does not run in between. Then it runs again (resume),
    or stays paused for the caller to stop; it runs again whenever the save fails."""
    await vm.pause()
    ok = False
    try:
        await _clear_leftovers(vm)
        await vm.backup("disk0", disk, job_id=JOB_ID)
        size = await migrate.save_state(vm, state)
        ok = True
        return size
    finally:
        if resume or not ok:
            with contextlib.suppress(CorralError):
                await vm.resume()


async def _clear_leftovers(vm: Vm) -> None:
    """A save killed midway leaves its disk job in QEMU (never dismissed) and perhaps its
    migration running: both would refuse the next save."""
    for job in await vm.execute("query-jobs"):
        if job.get("id") != JOB_ID:
            continue
        if job.get("status") != "concluded":
            with contextlib.suppress(CorralError):
                await vm.execute("job-cancel", {"id": JOB_ID})
            for _ in range(100):
                jobs = await vm.execute("query-jobs")
                if all(j["id"] != JOB_ID or j["status"] == "concluded" for j in jobs):
                    break
                await asyncio.sleep(0.05)
        with contextlib.suppress(CorralError):
            await vm.execute("job-dismiss", {"id": JOB_ID})
    migration = (await vm.execute("query-migrate")).get("status")
    if migration in ("setup", "active", "pre-switchover", "device"):
        await vm.execute("migrate_cancel")
        for _ in range(100):
            if (await vm.execute("query-migrate")).get("status") not in (
                "setup", "active", "pre-switchover", "device", "cancelling",
            ):  # fmt: skip
                break
            await asyncio.sleep(0.05)


async def _run_again(vm: Vm) -> None:
    await _clear_leftovers(vm)
    await vm.resume()


def save_warm(
    ctx: Context,
    name: str,
    image_name: str,
    *,
    stop: bool = False,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Manifest:
    """Save a running instance's disk and memory as warm image `image_name`; then it runs on
    (or, with stop, is stopped). While the save holds the VM its record says `paused`
    (INTERRUPTED): a save killed outright leaves it saying so, and the next save, or
    `corral resume`, runs it again."""
    check_image_name(image_name)
    files, record = registry.load_named(ctx.home, name)
    if ctx.store.exists(image_name):
        raise Conflict(f"image {image_name!r} already exists")
    if record.diskless:
        raise InvalidInput(f"instance {name!r} has no disk to save: it boots from its kernel")
    if record.volumes:
        raise InvalidInput(
            f"instance {name!r} has data volumes: a warm image holds the root disk alone"
        )
    if not record.agent:
        raise InvalidInput(
            f"instance {name!r} has no guest agent channel, so its clones could not be made "
            "into machines of their own",
            hint="launch it again with this corral (every instance has the channel now)",
        )
    version = ctx.host.qemu.version
    base = Blob(record.image_digest, record.image_format)
    with registry.instance_lock(files):
        record = registry.load(files)
        seen = observe(record, files)
        interrupted = seen.state == "paused" and record.reason == INTERRUPTED
        if (seen.state != "running" and not interrupted) or seen.pid is None:
            raise Conflict(f"instance {name!r} is {seen.state}: only a running VM is saved warm")
        vm = Vm(files, seen.pid)
        if interrupted:  # the killed save may have left it paused, its jobs in QEMU
            asyncio.run(_run_again(vm))
            record = record.replace(state="running", reason=None)
            registry.save(files, record)
        if not asyncio.run(_agent_answers(files)):
            raise InvalidInput(
                f"the guest agent of {name!r} does not answer: its clones could not be made "
                "into machines of their own",
                hint="the image needs a QEMU guest agent running (Debian: qemu-guest-agent; "
                "corral's images have it)",
            )
        disk = ctx.store.new_tmp_path()
        state = ctx.store.new_tmp_path()
        try:
            accelerator = asyncio.run(_accelerator(vm))
            spec = machine_spec(ctx, record, files, accelerator)
            requirements = warm.requirements(spec, version)
            on_stage("saving")
            registry.save(files, record.replace(state="paused", reason=INTERRUPTED))
            held = False  # whether the VM stays paused after the save (a save to stop)
            try:
                fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    size = asyncio.run(_save(vm, disk, fd, resume=not stop))
                    held = stop
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                if not held:  # it runs: resumed after the save, or when the save failed
                    registry.save(files, record)
            on_stage("storing")
            digest = hash_file(state)
            ctx.store.add_blob_file(state, digest)
            saved = WarmState(state=digest, state_size=size, requirements=requirements, agent=True)
            manifest = save_image(
                ctx, disk, image_name, parent=base, source=f"snapshot:{name} --memory",
                default_user=record.ssh_user, warm=saved, **boot_blobs(ctx, files, record),
            )  # fmt: skip
        finally:
            disk.unlink(missing_ok=True)
            state.unlink(missing_ok=True)
    if stop:
        lifecycle.stop(ctx, name, force=True)
    return manifest


# --- restoring ----------------------------------------------------------------------------


def sized_like(options: LaunchOptions, image: Manifest) -> LaunchOptions:
    """A launch that named no cpus or memory takes the saved machine's (the only one its
    state restores to)."""
    if image.warm is None:
        return options
    saved = image.warm.requirements
    return replace(
        options,
        cpus=options.cpus if options.cpus_given else saved.cpus,
        memory_mib=options.memory_mib if options.memory_given else saved.memory_mib,
        cpus_given=True,
        memory_given=True,
    )


def why_not_warm(
    ctx: Context,
    image: Manifest,
    options: LaunchOptions,
    record: InstanceRecord,
    files: InstanceFiles,
) -> str | None:
    """None when this launch can restore the image's state; else one line saying why not.

    Called before anything of the instance exists: `record` is the one about to be made, its
    NICs on managed networks not attached yet (stand-ins of the same number are counted).
    """
    if image.warm is None:
        return f"image {image.name!r} is not warm"
    if not image.warm.agent:
        return f"image {image.name!r} was saved without a guest agent"
    if options.kernel or options.initrd or options.cmdline:
        return (
            "a warm image restores its own kernel: --kernel, --initrd, --cmdline need a cold boot"
        )
    if options.network_config or options.vendor_data or options.meta_data:
        return "--network-config, --vendor-data and --meta-data apply at a first boot only"
    try:
        parse_user_data(options.user_data)
    except InvalidInput as exc:
        return exc.message
    if record.disk_size != image.virtual_size:
        return f"disk: saved {image.virtual_size} bytes, this launch {record.disk_size}"
    if not record.networks and options.networks:
        stand_ins = tuple(
            NetworkNicRecord(network=nic.network, tap=f"warmcheck{i}",
                             mac=f"52:54:00:00:00:{i:02x}", ipv4="0.0.0.0", prefix=0)
            for i, nic in enumerate(options.networks)
        )  # fmt: skip
        record = record.replace(networks=stand_ins)
    return why_not_spec(ctx, image, machine_spec(ctx, record, files, ctx.host.accelerator))


def why_not_spec(ctx: Context, image: Manifest, spec: MachineSpec) -> str | None:
    """None when a machine of this spec restores the image's state, else the difference."""
    assert image.warm is not None
    wanted = warm.requirements(replace(spec, incoming=True), ctx.host.qemu.version)
    return warm.difference(image.warm.requirements, wanted)


async def _restore(vm: Vm, fd: int, links_down: tuple[str, ...]) -> None:
    # No announcements after the restore: QEMU's RARPs and the guest's gratuitous ARPs would
    # carry the template's MAC and address (the saved NIC state) onto the clone's network, and
    # a bridge would then send the still-running template's traffic to the clone. The clone
    # takes its own MAC and address from the identity script right after.
    await vm.execute("migrate-set-parameters", {"announce-rounds": 0})
    await migrate.restore_state(vm, fd, links_down=links_down)


def restore(ctx: Context, vm: Vm, image: Manifest, *, links_down: tuple[str, ...] = ()) -> None:
    """Feed the image's saved state to a QEMU started with incoming=True; returns running,
    with the NICs named in `links_down` (QMP names) cut off until clone.make_own raises them."""
    assert image.warm is not None
    fd = os.open(ctx.store.blob(image.warm.state), os.O_RDONLY | os.O_CLOEXEC)
    try:
        asyncio.run(_restore(vm, fd, links_down))
    finally:
        os.close(fd)
