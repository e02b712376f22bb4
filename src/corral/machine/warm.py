"""What a saved running state needs of the machine that restores it: pure, no I/O.

QEMU migrates device state, not configuration: a state restores only into a QEMU of the same
version with the same machine type, CPU model, accelerator, vCPU count, memory size and the
same devices in the same order (their backends may change: a NIC's user-mode netdev may
become a tap, a disk another file). `requirements` says what a machine is in those terms;
`difference` names, in one line, the first way another machine is not the same.
"""

from __future__ import annotations

from corral.image.manifest import WarmRequirements as Requirements  # the image store keeps it
from corral.machine.argv import MACHINE_TYPE, cpu_model
from corral.machine.spec import MachineSpec

__all__ = ["Requirements", "devices", "difference", "requirements"]


def devices(spec: MachineSpec) -> tuple[str, ...]:
    """The guest-visible devices of `spec`, in argv order, named by id and kind."""
    out = ["boot:kernel" if spec.boot is not None else "boot:firmware"]
    out += [f"{d.id}:virtio-blk{':ro' if d.readonly else ''}" for d in spec.drives]
    count = len(spec.nics) if spec.nics else 2 if spec.isolated else 1  # isolated: two NICs
    out += [f"nic{i}:virtio-net" for i in range(count)]
    out += ["rng:virtio-rng", "vmgenid"]
    if spec.agent_socket is not None:
        out.append("agent:virtio-serial")
    return tuple(out)


def requirements(spec: MachineSpec, qemu_version: str) -> Requirements:
    return Requirements(
        qemu_version=qemu_version,
        machine=MACHINE_TYPE,
        cpu_model=cpu_model(spec.accelerator),
        accelerator=spec.accelerator,
        cpus=spec.cpus,
        memory_mib=spec.memory_mib,
        devices=devices(spec),
    )


def difference(saved: Requirements, wanted: Requirements) -> str | None:
    """None when a state saved on `saved` restores on `wanted`; else what differs, in words."""
    pairs = (
        ("QEMU version", saved.qemu_version, wanted.qemu_version),
        ("machine type", saved.machine, wanted.machine),
        ("accelerator", saved.accelerator, wanted.accelerator),
        ("CPU model", saved.cpu_model, wanted.cpu_model),
        ("cpus", str(saved.cpus), str(wanted.cpus)),
        ("memory", f"{saved.memory_mib} MiB", f"{wanted.memory_mib} MiB"),
    )
    for what, was, now in pairs:
        if was != now:
            return f"{what}: saved {was}, this launch {now}"
    if saved.devices != wanted.devices:
        return f"devices: saved {', '.join(saved.devices)}; this launch {', '.join(wanted.devices)}"
    return None
