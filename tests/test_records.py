"""Saved records: strict on the way in (unknown fields, missing fields, wrong types)."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from corral.image.manifest import Manifest
from corral.instance.record import BootRecord, ForwardRecord, InstanceRecord
from corral.records import RecordError


def record() -> InstanceRecord:
    return InstanceRecord(
        name="web1", instance_id="i-1", image="img", image_digest="d", image_format="qcow2",
        cpus=2, memory_mib=2048, disk_size=1 << 30, volumes=(1 << 30,), ssh_user="debian",
        ssh_port=18000, forwards=(ForwardRecord(host_port=8080, guest_port=80),),
        boot=BootRecord(kernel="kernel", initrd=None, cmdline="console=ttyS0"), state="running",
    )  # fmt: skip


def test_round_trip() -> None:
    original = record()
    again = InstanceRecord.from_json(original.to_json())
    assert again == original
    assert isinstance(again.created_at, datetime)
    assert again.forwards[0].to_forward().host_addr == "127.0.0.1"


def test_manifest_round_trip() -> None:
    m = Manifest(name="a", digest="0" * 64, format="qcow2", virtual_size=1, file_size=2)
    assert Manifest.from_json(m.to_json()) == m


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"cpus": "2"}, "cpus: expected an integer"),
        ({"cpus": True}, "cpus: expected an integer"),
        ({"state": "exploded"}, "state: 'exploded' is not one of"),
        ({"forwards": [{"host_port": 1}]}, "forwards[0].guest_port: missing"),
        ({"created_at": "yesterday"}, "created_at: not a timestamp"),
        ({"boot": {"kernel": 3}}, "boot.kernel: expected str"),
    ],
)
def test_refuses_bad_records(change: dict[str, object], words: str) -> None:
    data = json.loads(record().to_json())
    data.update(change)
    with pytest.raises(RecordError, match=re.escape(words)):
        InstanceRecord.from_dict(data)


def test_missing_required_field() -> None:
    data = json.loads(record().to_json())
    del data["ssh_port"]
    with pytest.raises(RecordError, match="ssh_port: missing"):
        InstanceRecord.from_dict(data)


def test_replace_keeps_it_frozen() -> None:
    changed = record().replace(state="stopped")
    assert changed.state == "stopped"
    with pytest.raises(AttributeError):
        changed.state = "running"  # type: ignore[misc]
