"""Booting an instance: from its record to a machine spec, its disk chain checked, to a Vm."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.context import Context
from corral.errors import InvalidInput
from corral.image.store import check_chain_inside
from corral.instance.record import InstanceRecord
from corral.layout import MAX_SOCKET_PATH, InstanceFiles
from corral.machine.spec import DirectBoot, Drive, Forward, MachineSpec
from corral.machine.vm import Vm


def check_socket_paths(files: InstanceFiles) -> None:
    for sock in files.sockets:
        if len(str(sock)) > MAX_SOCKET_PATH:
            raise InvalidInput(
                f"socket path {sock} is too long ({len(str(sock))} > {MAX_SOCKET_PATH} bytes)",
                hint="use a shorter instance name or a shorter CORRAL_HOME",
            )


def _resolve(files: InstanceFiles, path: str) -> Path:
    # Files the instance owns are recorded relative to its directory.
    return Path(path) if Path(path).is_absolute() else files.dir / path


def machine_spec(
    ctx: Context,
    record: InstanceRecord,
    files: InstanceFiles,
    accelerator: str,
    *,
    incoming: bool = False,
) -> MachineSpec:
    """The machine for this record: root disk, volumes, seed last; ssh forward first, or its
    NICs on managed networks' taps and on host taps (which leave no user-mode NIC to forward
    through); the guest agent's channel. `incoming`: it waits for a saved state to restore."""
    drives = [] if record.diskless else [Drive("disk0", files.disk, "qcow2")]
    drives += [
        # The serial names the volume in the guest: /dev/disk/by-id/virtio-vol1, ...
        Drive(f"vol{i}", files.volume(i), "qcow2", serial=f"vol{i}")
        for i in range(1, len(record.volumes) + 1)
    ]
    if record.seed:
        drives.append(Drive("seed", files.seed, "raw", readonly=True))
    boot = None
    if record.boot is not None:
        boot = DirectBoot(
            kernel=_resolve(files, record.boot.kernel),
            initrd=_resolve(files, record.boot.initrd) if record.boot.initrd else None,
            cmdline=record.boot.cmdline,
        )
    return MachineSpec(
        name=record.name,
        cpus=record.cpus,
        memory_mib=record.memory_mib,
        accelerator=accelerator,
        drives=tuple(drives),
        forwards=_forwards(record),
        # Managed networks' NICs first (eth0...: the network-config corral writes names them),
        # then NICs on the caller's taps.
        nics=(*(n.to_nic() for n in record.networks), *(n.to_nic() for n in record.nics)),
        qmp_socket=files.qmp,
        serial_socket=files.serial_socket,
        serial_log=files.serial_log,
        pidfile=files.pidfile,
        boot=boot,
        agent_socket=files.agent if record.agent else None,
        incoming=incoming,
    )


def _forwards(record: InstanceRecord) -> tuple[Forward, ...]:
    if not record.ssh_port or record.nics or record.networks:  # on taps: no user-mode NIC
        return ()
    return (Forward(record.ssh_port, 22), *(f.to_forward() for f in record.forwards))


def start_qemu(ctx: Context, record: InstanceRecord, spec: MachineSpec, files: InstanceFiles) -> Vm:
    """Validate the disk chain, start QEMU detached and wait until QMP answers."""
    if not record.diskless:
        expected = ctx.store.chain(record.image_digest)
        check_chain_inside(ctx.qemu_img, files.disk, "qcow2", ctx.home.blobs, expected)
    return asyncio.run(Vm.start(ctx.host.qemu.path, spec, files))
