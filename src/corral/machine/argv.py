"""Build the QEMU command line from a MachineSpec: a pure function, no probing, no I/O."""

from __future__ import annotations

from corral.machine.spec import Drive, MachineSpec, TapNic

# Deny what a VM never needs: spawning programs, raising privileges, obsolete syscalls.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


# The second NIC of an isolated machine: the guest finds it by its MAC address; the host is
# 10.0.3.2 on it.
OUTSIDE_NET = "10.0.3.0/24"
OUTSIDE_MAC = "52:54:00:c0:ff:03"
OUTSIDE_NIC = "nic1"  # its QMP name (set_link)

MACHINE_TYPE = "q35"

# The virtio-serial port name qemu-ga (and the tiny guest's agent) look for.
AGENT_PORT = "org.qemu.guest_agent.0"


# What x86-64-v2 (RHEL 9-family userlands are built for it) needs of the CPU.
X86_64_V2 = ("cx16", "lahf-lm", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3")
# Under TCG, `max` offers everything QEMU can emulate (AVX/AVX2, XSAVE, 5-level paging, x2APIC,
# ...); guests' kernels and libcs then use it, and TCG runs it slowly (a Debian boot ~15%
# longer). An Intel model that is v2 and no more (Nehalem) costs more still: Linux believes an
# Intel CPU without RDCL_NO is open to Meltdown and turns on page-table isolation, a CR3 switch
# and TLB flush on every syscall and interrupt, which TCG pays in full (a Debian boot ~25%
# longer). QEMU's default model, qemu64, is AMD-branded (no isolation) and v1; adding the four
# v2 flags it lacks gives v2 guests what they need at qemu64's speed.
TCG_CPU_BASE = "qemu64"
TCG_CPU_ADDS = ("ssse3", "sse4.1", "sse4.2", "popcnt")
TCG_CPU = ",".join([TCG_CPU_BASE, *(f"+{flag}" for flag in TCG_CPU_ADDS)])


def cpu_model(accelerator: str) -> str:
    """The -cpu model: the host's own under KVM; under TCG the cheapest that runs v2 guests."""
    return "host" if accelerator == "kvm" else TCG_CPU


def _opts(*pairs: str) -> str:
    return ",".join(pairs)


def _escape(value: object) -> str:
    # QEMU option values escape commas by doubling them.
    return str(value).replace(",", ",,")


def drive_args(drive: Drive) -> list[str]:
    options = [
        "if=none",
        f"id={drive.id}",
        f"file={_escape(drive.path)}",
        f"format={drive.format}",
        "cache=writeback",
    ]
    options += ["readonly=on"] if drive.readonly else ["discard=unmap"]
    if drive.node_name:
        options.append(f"node-name={drive.node_name}")
    device = f"virtio-blk-pci,drive={drive.id}"
    if drive.serial:
        device += f",serial={_escape(drive.serial)}"
    return ["-drive", _opts(*options), "-device", device]


def tap_args(index: int, nic: TapNic) -> list[str]:
    netdev = _opts("tap", f"id=tap{index}", f"ifname={nic.tap}", "script=no", "downscript=no")
    device = f"virtio-net-pci,netdev=tap{index},id=nic{index},mac={nic.mac}"
    if nic.mtu is not None:
        device += f",host_mtu={nic.mtu}"
    return ["-netdev", netdev, "-device", device]


def network_args(spec: MachineSpec) -> list[str]:
    if spec.nics:
        if spec.forwards or spec.isolated:
            raise ValueError("a machine on taps has no user-mode NIC: no forwards, no isolation")
        return [arg for index, nic in enumerate(spec.nics) for arg in tap_args(index, nic)]
    rules = [
        f"hostfwd={f.protocol}:{f.host_addr}:{f.host_port}-:{f.guest_port}" for f in spec.forwards
    ]
    if not spec.isolated:
        return [
            "-netdev",
            _opts("user", "id=net0", *rules),
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
    return [
        "-netdev", _opts("user", "id=net0", "restrict=on", *rules),
        "-device", "virtio-net-pci,netdev=net0,id=nic0",
        "-netdev", _opts("user", "id=net1", f"net={OUTSIDE_NET}"),
        "-device", f"virtio-net-pci,netdev=net1,id={OUTSIDE_NIC},mac={OUTSIDE_MAC}",
    ]  # fmt: skip


def build_argv(qemu: str, spec: MachineSpec) -> list[str]:
    """The full argv that starts `spec` with the qemu-system binary at `qemu`."""
    cpu = cpu_model(spec.accelerator)
    argv = [
        qemu,
        "-name", spec.name,
        "-machine", f"{MACHINE_TYPE},accel={spec.accelerator}",
        "-cpu", cpu,
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mib}M",
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-sandbox", SANDBOX,
    ]  # fmt: skip
    if spec.boot is not None:
        argv += ["-kernel", str(spec.boot.kernel)]
        if spec.boot.initrd is not None:
            argv += ["-initrd", str(spec.boot.initrd)]
        argv += ["-append", spec.boot.cmdline]
    for drive in spec.drives:
        argv += drive_args(drive)
    argv += network_args(spec)
    argv += ["-device", "virtio-rng-pci"]
    # A new generation id at every QEMU start, so in every clone restored from one saved
    # state: guests whose kernel has the vmgenid driver reseed their random pool from it.
    argv += ["-device", "vmgenid,guid=auto"]
    if spec.agent_socket is not None:
        argv += [
            "-chardev",
            _opts("socket", "id=agent0", f"path={_escape(spec.agent_socket)}", "server=on",
                  "wait=off"),
            "-device", "virtio-serial-pci,id=vser0",
            "-device", f"virtserialport,chardev=agent0,name={AGENT_PORT}",
        ]  # fmt: skip
    argv += [
        "-chardev",
        _opts(
            "socket", "id=serial0", f"path={_escape(spec.serial_socket)}", "server=on",
            "wait=off", f"logfile={_escape(spec.serial_log)}", "logappend=on",
        ),
        "-serial", "chardev:serial0",
        "-chardev",
        _opts("socket", "id=qmp0", f"path={_escape(spec.qmp_socket)}", "server=on", "wait=off"),
        "-mon", "chardev=qmp0,mode=control",
        "-pidfile", str(spec.pidfile),
    ]  # fmt: skip
    if spec.incoming:
        argv += ["-incoming", "defer"]
    return argv + list(spec.extra_args)
