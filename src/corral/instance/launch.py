"""Launching an instance: image -> overlay -> seed -> argv -> spawn -> (ready).

Each step is a named function. Everything a failed launch created is rolled back, and a launch
killed outright is cleaned up by the next command (see registry.reap_stale).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil

from corral.context import Context
from corral.errors import Conflict, CorralError, InvalidInput, QemuError
from corral.fsutil import locked, process_start_time
from corral.guest.ssh_keys import collect_keys, ensure_corral_key
from corral.image.layers import touch
from corral.image.manifest import Manifest, now
from corral.instance import clone, networking, registry, warm
from corral.instance.boot import check_socket_paths, machine_spec, start_qemu
from corral.instance.options import LaunchOptions, validate
from corral.instance.record import BootRecord, ForwardRecord, InstanceRecord, NicRecord
from corral.layout import InstanceFiles
from corral.machine.ports import PortClaims, pick_ports, port_free
from corral.machine.spec import MachineSpec
from corral.net.model import Attachment
from corral.seed.iso import write_seed_iso
from corral.seed.render import SeedInput, render_seed_files


def _boot_record(ctx: Context, options: LaunchOptions, image: Manifest | None) -> BootRecord | None:
    if options.kernel is not None:
        return BootRecord(
            kernel="kernel",
            initrd="initrd" if options.initrd else None,
            cmdline=options.cmdline or "console=ttyS0",
        )
    if image is None or image.kernel is None:
        return None
    return BootRecord(
        kernel=str(ctx.store.blob(image.kernel)),
        initrd=str(ctx.store.blob(image.initrd)) if image.initrd else None,
        cmdline=options.cmdline or image.cmdline or "console=ttyS0",
    )


def _reserve(ctx: Context, options: LaunchOptions, record: InstanceRecord) -> InstanceFiles:
    """Claim the name and the ports and write the first record, all under the host lock."""
    home = ctx.home
    home.instances.mkdir(parents=True, exist_ok=True)
    files = home.instance(options.name)
    check_socket_paths(files)
    with locked(home.ports_lock):
        if files.dir.exists():
            raise Conflict(f"an instance named {options.name!r} already exists")
        claims = PortClaims(home)
        reserved = set(claims.held())
        for fwd in options.forwards:
            if fwd.host_port in reserved or not port_free(
                fwd.host_port, fwd.host_addr, fwd.protocol
            ):
                raise Conflict(f"host port {fwd.host_port} is in use")
        for pub in options.published:
            if pub.host_port in reserved or not port_free(
                pub.host_port, pub.host_addr, pub.protocol
            ):
                raise Conflict(f"host port {pub.host_port} is in use")
        reserved |= {f.host_port for f in (*options.forwards, *options.published)}
        if not (options.networks or options.nics):  # on taps: no user-mode NIC to forward
            (ssh_port,) = pick_ports(ctx.config.port_range, reserved, 1)
            record = record.replace(ssh_port=ssh_port)
        files.dir.mkdir(mode=0o700)
        registry.save(files, record)
        claims.claim(files.dir, registry.ports(record))
    return files


def _make_disks(
    ctx: Context, files: InstanceFiles, image: Manifest | None, record: InstanceRecord
) -> None:
    if image is not None:
        ctx.qemu_img.create_overlay(
            files.disk, ctx.store.blob(image.digest), image.format, record.disk_size
        )
    for index, size in enumerate(record.volumes, start=1):
        ctx.qemu_img.create(files.volume(index), size)


def _copy_boot_files(options: LaunchOptions, files: InstanceFiles) -> None:
    # The user's kernel may change or vanish later; the instance keeps its own copy.
    if options.kernel is not None:
        shutil.copyfile(options.kernel, files.kernel)
    if options.initrd is not None:
        shutil.copyfile(options.initrd, files.initrd)


def _write_seed(
    options: LaunchOptions,
    files: InstanceFiles,
    record: InstanceRecord,
    keys: tuple[str, ...],
    attached: list[Attachment],
) -> None:
    network_config = options.network_config  # the user's, when given, wins over corral's
    if network_config is None and attached:
        network_config = networking.network_config(options.networks, attached)
    seed = SeedInput(
        instance_id=record.instance_id,
        hostname=record.name,
        user=record.ssh_user,
        ssh_keys=keys,
        user_data=options.user_data,
        network_config=network_config,
        vendor_data=options.vendor_data,
        meta_data=options.meta_data,
    )
    write_seed_iso(files.seed, render_seed_files(seed))


def _restorable(
    ctx: Context, image: Manifest | None, options: LaunchOptions, record: InstanceRecord
) -> bool:
    """Whether this launch restores the image's saved state: a warm image's does, when the
    machine asked for is the one saved; when not, it is refused (before anything exists)
    unless the caller said a cold boot will do."""
    if image is None or image.warm is None:
        return False
    why = warm.why_not_warm(ctx, image, options, record, ctx.home.instance(options.name))
    if why is None:
        return True
    if options.cold_if_needed:
        return False
    raise InvalidInput(
        f"cannot restore warm image {image.name!r}: {why}",
        hint="--cold-if-needed boots it cold instead",
    )


def _check_restorable(ctx: Context, image: Manifest, spec: MachineSpec) -> None:
    """Again on the machine as it will start (its NICs attached): it must still fit."""
    why = warm.why_not_spec(ctx, image, spec)
    if why is not None:
        raise InvalidInput(f"cannot restore warm image {image.name!r}: {why}")


def launch(
    ctx: Context, image_name: str | None, options: LaunchOptions, *, start: bool = True
) -> InstanceRecord:
    """Create and start an instance (start=False: create it stopped, its disks, seed and
    ports ready for `start`); on any failure nothing of it is left behind. No image: a
    diskless VM, booted from the options' kernel and initramfs alone."""
    image = None if image_name is None else ctx.store.get(image_name)
    if image is not None:
        options = warm.sized_like(options, image)
    disk_size = validate(options, image)
    corral_key = ensure_corral_key(ctx.home.ssh_key)
    keys = collect_keys(corral_key, options.ssh_keys)
    host = ctx.host  # resolves qemu before anything is created
    networking.check_allowed(options.networks)
    registry.reap_stale(ctx.home)
    record = InstanceRecord(
        name=options.name,
        instance_id=f"i-{options.name}-{secrets.token_hex(4)}",
        image="" if image is None else image.name,
        image_digest="" if image is None else image.digest,
        image_format="" if image is None else image.format,
        cpus=options.cpus,
        memory_mib=options.memory_mib,
        disk_size=disk_size,
        volumes=options.volumes,
        ssh_user=options.ssh_user or (image.default_user if image else "root"),
        ssh_port=0,
        forwards=tuple(ForwardRecord.of(f) for f in options.forwards),
        nics=tuple(NicRecord.of(n) for n in options.nics),
        published=tuple(ForwardRecord.of(f) for f in options.published),
        boot=_boot_record(ctx, options, image),
        seed=options.seed,
        state="creating",
        launcher_pid=os.getpid(),
        launcher_start=process_start_time(os.getpid()),
        owner_pid=os.getpid() if options.throwaway else None,
        owner_start=process_start_time(os.getpid()) if options.throwaway else None,
        agent=True,
    )
    restoring = start and _restorable(ctx, image, options, record)
    files = _reserve(ctx, options, record)
    try:
        with registry.instance_lock(files):
            record = registry.load(files)
            attached: list[Attachment] = []
            if options.networks:
                record, attached = networking.attach_all(
                    ctx.home, record, options.networks, options.published
                )
                registry.save(files, record)
            _make_disks(ctx, files, image, record)
            _copy_boot_files(options, files)
            if options.seed:
                _write_seed(options, files, record, keys, attached)
            spec = machine_spec(ctx, record, files, host.accelerator, incoming=restoring)
            if restoring and image is not None:
                _check_restorable(ctx, image, spec)
            if start:
                record = record.replace(warm=restoring)
                vm = start_qemu(ctx, record, spec, files)
                if restoring and image is not None:
                    warm.restore(ctx, vm, image, links_down=clone.tap_links(record))
                    configs = networking.nic_configs(options.networks, attached)
                    clone.make_own(files, record, keys, options.user_data, configs)
                record = record.replace(
                    state="running", launcher_pid=None, launcher_start=None, started_at=now()
                )
            else:
                record = record.replace(state="stopped", launcher_pid=None, launcher_start=None)
            registry.save(files, record)
            if image is not None:
                touch(ctx, image)
            return record
    except BaseException as exc:
        if options.networks:  # before the record goes: it is what keeps its NICs alive
            registry.destroy_vm(files)
            with contextlib.suppress(CorralError, OSError):
                networking.detach(ctx.home, options.name)
        registry.destroy(files)
        if isinstance(exc, QemuError):
            exc.hint = None  # it pointed into the instance directory, which is gone now
        if isinstance(exc, QemuError) and "host forwarding" in exc.message:
            raise Conflict(f"a host port for {options.name!r} is in use: {exc.message}") from exc
        raise
