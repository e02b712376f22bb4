"""The public view of an instance, shared by `corral ls/inspect --json` and the HTTP API."""

from __future__ import annotations

from typing import Any

from corral.instance.record import InstanceRecord
from corral.instance.state import Observed
from corral.layout import Home


def instance_view(home: Home, record: InstanceRecord, seen: Observed) -> dict[str, Any]:
    files = home.instance(record.name)
    return {
        "name": record.name,
        "state": seen.state,
        "reason": seen.reason,
        "image": record.image,
        "image_digest": record.image_digest,
        "cpus": record.cpus,
        "memory_mib": record.memory_mib,
        "disk_size": record.disk_size,
        "volumes": list(record.volumes),
        "ssh_port": record.ssh_port,
        "ssh_user": record.ssh_user,
        "forwards": [str(f.to_forward()) for f in record.forwards],
        "nics": [{"tap": n.tap, "mac": n.mac, "mtu": n.mtu} for n in record.nics],
        "console": str(files.serial_socket),
        "serial_log": str(files.serial_log),
        "qmp": str(files.qmp),
        "pid": seen.pid,
        "instance_id": record.instance_id,
        "seed": record.seed,
        "kernel_cmdline": record.boot.cmdline if record.boot else None,
        "created_at": record.created_at.isoformat(),
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "dir": str(files.dir),
    }
