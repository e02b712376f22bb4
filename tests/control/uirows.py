"""Many VM rows written straight into the database (no scheduling, no node): for the
dashboard's pagination test and bench/ui_list.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from corral.db.models import utcnow
from corral.db.repositories import VmRepository

STATUSES = ("running", "shutdown", "paused", "created", "crashed")


def insert_vms(
    plane: Any,
    host_id: uuid.UUID,
    count: int,
    *,
    prefix: str = "vm",
    tags: Callable[[int], Sequence[str]] = lambda i: (),
) -> None:
    start = utcnow()
    with plane.db.write() as session:
        vms = VmRepository(session)
        for i in range(count):
            when = start + timedelta(microseconds=i)
            values = {
                "id": uuid.uuid4(), "name": f"{prefix}{i:05d}", "hypervisor": "qemu",
                "status": STATUSES[i % len(STATUSES)], "status_reason": None,
                "host_id": host_id, "boot_vcpus": 1, "max_vcpus": 1, "memory_size": 64 << 20,
                "boot_source_id": None, "image": "tiny", "image_object_id": None,
                "disk_size": None, "user_data": None, "ssh_keys": [], "networks": [],
                "volumes": [], "created_at": when, "updated_at": when,
            }  # fmt: skip
            vms.insert(values, list(tags(i)))
