"""Where on this host a port of a VM is reached: the seam between a tunnel and the VM's NIC.

A tunnel (the node agent's `/vms/{name}/tunnel`) may reach only the ports a VM exposes, never
an arbitrary port of the host (the node agent's own, a database): a VM on user-mode networking
exposes 22 through its SSH forward and each guest port it was launched with `--forward` for.
A VM on a managed network (no forward) is reached at its address there, on 22 and the guest
ports it publishes (`--publish`).
"""

from __future__ import annotations

from corral.errors import Forbidden, InvalidInput
from corral.instance.record import InstanceRecord

SSH_PORT = 22
_ANY = ("0.0.0.0", "")  # a forward listening everywhere is reached on loopback


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"port must be between 1 and 65535, not {port}")
    return port


def exposed_ports(record: InstanceRecord) -> list[int]:
    """The guest's TCP ports a tunnel may reach, in order."""
    ports = [SSH_PORT] if record.ssh_port or record.address else []
    ports += [f.guest_port for f in (*record.forwards, *record.published) if f.protocol == "tcp"]
    return sorted(set(ports))


def vm_endpoint(record: InstanceRecord, port: int) -> tuple[str, int]:
    """(host, port) on this host that carries TCP to `port` of the VM; Forbidden for a port
    the VM does not expose. A pure function of the record."""
    check_port(port)
    if port == SSH_PORT and record.ssh_port:
        return "127.0.0.1", record.ssh_port
    published = [p.guest_port for p in record.published if p.protocol == "tcp"]
    if not record.ssh_port and record.address is not None and port in (SSH_PORT, *published):
        return record.address, port
    for fwd in record.forwards:
        if fwd.protocol == "tcp" and fwd.guest_port == port:
            return ("127.0.0.1" if fwd.host_addr in _ANY else fwd.host_addr), fwd.host_port
    shown = ", ".join(str(p) for p in exposed_ports(record)) or "none"
    raise Forbidden(
        f"port {port} of VM {record.name!r} is not exposed (a tunnel reaches its ports: {shown})",
        hint=f"expose it at launch: --{'publish' if record.address else 'forward'} HOSTPORT:{port}",
    )
