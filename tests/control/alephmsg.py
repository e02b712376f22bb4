"""aleph instance messages for tests, in the shape of aleph-vm's qemu_message_from_aleph.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ITEM_HASH = "deca" * 16  # the seed walkthrough's hash
ROOTFS_REF = "549ec451d9b099cad112d4aaa2c00ac40fb6729a92ff252ff22eef0b5c3cb613"
MESSAGE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMessageKey owner@aleph"


def message(**content: Any) -> dict[str, Any]:
    """A QEMU_INSTANCE message: 1 vCPU, 256 MiB, a host-persisted rootfs on parent ROOTFS_REF,
    one key, an immutable volume and a 5 MiB host volume, one variable; `content` overrides."""
    body: dict[str, Any] = {
        "address": "0x0000000000000000000000000000000000000001",
        "allow_amend": False,
        "variables": {"VM_CUSTOM_NUMBER": "32"},
        "environment": {"reproducible": True, "internet": True},
        "resources": {"vcpus": 1, "memory": 256, "seconds": 30},
        "rootfs": {
            "parent": {"ref": ROOTFS_REF, "use_latest": False},
            "persistence": "host",
            "size_mib": 1024,
        },
        "authorized_keys": [MESSAGE_KEY],
        "volumes": [
            {"mount": "/opt/venv", "ref": "5f31" * 16, "use_latest": False},
            {
                "comment": "working data",
                "mount": "/var/lib/example",
                "name": "data",
                "persistence": "host",
                "size_mib": 5,
            },
        ],
        "time": 1619017773.89,
    }
    body.update(content)
    return {
        "chain": "ETH",
        "item_hash": "fake-hash",
        "sender": "0x0000000000000000000000000000000000000001",
        "type": "QEMU_INSTANCE",
        "channel": "test",
        "content": body,
        "item_type": "inline",
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path
