"""aleph instance messages: an allocation naming an item hash that is not yet a VM makes that VM
from its message (a file per hash, or the fake-instance message) and starts it; stop and logs
find it by its hash. On fake nodes (what reaches the node is checked); test_aleph_walkthrough
boots it for real."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from control.alephmsg import ITEM_HASH, MESSAGE_KEY, ROOTFS_REF, message, write
from control.conftest import MIB, Api, start_client
from control.fakes import Fleet
from control.test_allocations import DEV_KEY, SIGNATURE, TOKEN_HASH, allocate
from corral.control.aleph import vm_name
from corral.control.settings import Settings

NAME = vm_name(ITEM_HASH)


@pytest.fixture
def messages(tmp_path: Path) -> Path:
    path = tmp_path / "messages"
    path.mkdir()
    return path


def _api(settings: Settings, fleet: Fleet, **changes: Any) -> Api:
    settings = replace(
        settings, allocation_token_hash=TOKEN_HASH, developer_ssh_keys=(DEV_KEY,), **changes
    )
    client, _ = start_client(settings, fleet)
    return Api(client, fleet)


@pytest.fixture
def api(settings: Settings, fleet: Fleet, messages: Path) -> Iterator[Api]:
    api = _api(settings, fleet, aleph_messages_dir=messages, aleph_images={ROOTFS_REF: "tiny"})
    try:
        yield api
    finally:
        api.client.__exit__(None, None, None)


def _spec(api: Api, host: dict, name: str = NAME) -> Any:
    return api.fleet.nodes[(host["address"], host["port"])].specs[name]


def test_the_name_of_an_item_hash_is_a_short_hostname() -> None:
    assert NAME == "aleph-decadecadecadecadeca" and len(NAME) == 26


def test_an_unknown_item_hash_with_a_message_becomes_a_running_vm(api: Api, messages: Path) -> None:
    host = api.host()
    config = {"password": "password", "chpasswd": {"expire": False}, "runcmd": ["echo hi"]}
    write(messages / f"{ITEM_HASH}.json", message(cloud_config=config))
    status, body = allocate(api, SIGNATURE, [ITEM_HASH])
    assert status == 200, body
    assert body["success"] and body["started"] == [ITEM_HASH], body
    # The immutable volume is on the aleph network: said, not silently dropped.
    assert "immutable volume 5f31" in body["notes"][ITEM_HASH][0]

    (vm,) = api.ok("GET", "/vms", params={"name": NAME})
    assert (vm["status"], vm["tags"], vm["image"]) == ("running", ["aleph"], "tiny")
    assert (vm["boot_vcpus"], vm["memory_size"], vm["disk_size"]) == (1, 256 * MIB, 1024 * MIB)
    assert vm["volumes"] == [5 * MIB]
    spec = _spec(api, host)
    assert spec.ssh_keys == [MESSAGE_KEY, DEV_KEY] and spec.volumes == [5 * MIB]
    assert spec.start and spec.nics == []  # no default network: a user-mode NIC
    assert spec.user_data is not None and spec.user_data.startswith("#cloud-config\n")
    user_data = yaml.safe_load(spec.user_data)
    device = "/dev/disk/by-id/virtio-vol1"
    assert user_data["mounts"] == [
        [device, "/var/lib/example", "ext4", "defaults,nofail", "0", "2"]
    ]
    assert user_data["fs_setup"][0]["device"] == device
    assert user_data["write_files"][0]["content"] == 'VM_CUSTOM_NUMBER="32"\n'
    assert user_data["password"] == "password" and user_data["runcmd"] == ["echo hi"]

    # Found by its hash again: allocated once, running, kept; stop by hash.
    status, body = allocate(api, SIGNATURE, [ITEM_HASH])
    assert body["started"] == [ITEM_HASH] and len(api.ok("GET", "/vms")) == 1
    stop = api.ok("POST", f"/control/machine/{ITEM_HASH}/stop")
    assert stop["status"] == "completed"
    assert api.ok("GET", f"/vms/{vm['id']}")["status"] == "shutdown"
    # Unlisted: forgotten by the allocations, the VM itself stays.
    status, body = allocate(api, SIGNATURE, [])
    assert body["stopped"] == [NAME]


def test_fake_instance_mode_uses_one_message_and_base_for_any_hash(
    settings: Settings, fleet: Fleet, tmp_path: Path
) -> None:
    fake = write(tmp_path / "fake.json", message())
    api = _api(settings, fleet, aleph_fake_instance_message=fake, aleph_fake_instance_base="tiny")
    try:
        host = api.host(memory_mib=8192)
        hashes = ["ab" * 32, "cd" * 32]
        _status, body = allocate(api, SIGNATURE, hashes)
        assert body["success"] and sorted(body["started"]) == hashes, body
        for item_hash in hashes:
            assert _spec(api, host, vm_name(item_hash)).image == "tiny"  # the base, not the ref
        # Not an item hash: nothing to look a message up with.
        assert allocate(api, SIGNATURE, ["web1"])[1]["failed"] == {
            "web1": "no VM with this id or name"
        }
        # A file as the fake base is for the embedded server alone.
        api.plane.settings = replace(api.plane.settings, aleph_fake_instance_base="/x/base.img")
        failed = allocate(api, SIGNATURE, ["ef" * 32])[1]["failed"]
        assert "only the embedded server" in failed["ef" * 32]
    finally:
        api.client.__exit__(None, None, None)


def test_rootfs_refs_resolve_by_mapping_else_by_digest(api: Api, messages: Path) -> None:
    host = api.host()
    other = "77" * 32
    write(messages / f"{ITEM_HASH}.json", message())
    write(messages / f"{other}.json", message(rootfs={"parent": {"ref": "ab" * 32}}))
    _status, body = allocate(api, SIGNATURE, [ITEM_HASH, other])
    assert body["success"], body
    assert _spec(api, host).image == "tiny"  # through aleph_images
    # Unmapped: the node is asked for the image whose disk has that digest (a real node
    # refuses an unknown one naming it: see test_aleph_walkthrough).
    assert _spec(api, host, vm_name(other)).image == "sha256:" + "ab" * 32


def test_bad_messages_fail_their_vm_alone(api: Api, messages: Path) -> None:
    api.host()
    bad = {
        "11" * 32: "not json",
        "22" * 32: message(resources={"vcpus": 0, "memory": 256}),
        "33" * 32: message(variables={"PATH": "x\ny"}),
        "44" * 32: message(volumes=[{"mount": "/data", "persistence": "host"}]),
        "55" * 32: message(authorized_keys=["two\nlines"]),
        "66" * 32: message(cloud_config={"mounts": "not a list"}),
        "77" * 32: message(volumes=[{"mount": "/d\n/x", "persistence": "host", "size_mib": 1}]),
        "88" * 32: message(volumes=[{"mount": "rel", "persistence": "host", "size_mib": 1}]),
        "99" * 32: "x" * (2 << 20),
    }
    for item_hash, document in bad.items():
        path = messages / f"{item_hash}.json"
        path.write_text(document) if isinstance(document, str) else write(path, document)
    write(messages / f"{ITEM_HASH}.json", message())
    _status, body = allocate(api, SIGNATURE, [*bad, ITEM_HASH])
    assert body["started"] == [ITEM_HASH]
    failed = body["failed"]
    assert set(failed) == set(bad)
    assert "is not an instance message" in failed["11" * 32]
    assert "content.resources.vcpus" in failed["22" * 32]
    assert "content.variables" in failed["33" * 32]
    assert "needs size_mib" in failed["44" * 32]
    assert "content.authorized_keys" in failed["55" * 32]
    assert "mounts must be a list" in failed["66" * 32]
    assert "content.volumes.0.mount" in failed["77" * 32]
    assert "content.volumes.0.mount" in failed["88" * 32]
    assert "larger than 1 MiB" in failed["99" * 32]
    assert [vm["name"] for vm in api.ok("GET", "/vms")] == [NAME]


def test_a_default_network_places_the_vm_on_it_with_its_address(
    settings: Settings, fleet: Fleet, messages: Path
) -> None:
    api = _api(settings, fleet, aleph_messages_dir=messages, default_network="lab")
    try:
        api.host(memory_mib=16384)  # the roomiest, without the network
        h2 = api.host()
        write(messages / f"{ITEM_HASH}.json", message())
        failed = allocate(api, SIGNATURE, [ITEM_HASH])[1]["failed"]
        assert "no host has a network named 'lab'" in failed[ITEM_HASH]
        assert api.ok("GET", "/vms") == []

        body = {"name": "lab", "host_id": h2["id"], "subnet": "10.90.0.0/24"}
        api.ok("POST", "/networks", 201, json=body)
        assert allocate(api, SIGNATURE, [ITEM_HASH])[1]["started"] == [ITEM_HASH]
        (vm,) = api.ok("GET", "/vms")
        assert vm["host_id"] == h2["id"] and vm["status"] == "running"
        (nic,) = vm["networks"]
        assert nic["network"] == "lab" and nic["addresses"] == ["10.90.0.100"]
    finally:
        api.client.__exit__(None, None, None)


def test_a_fake_base_file_is_imported_once_by_the_embedded_server(
    settings: Settings, fleet: Fleet, tiny_guest: Any, config: Any, home: Path
) -> None:
    base = home / "base.img"
    shutil.copy(tiny_guest.disk, base)
    api = _api(settings, fleet, local_node=True, config=config)
    try:
        allocations = api.plane.allocations
        name = allocations._import_base(base)
        assert name.startswith("aleph-base-") and allocations._import_base(base) == name
        from corral.context import Context

        assert Context(config).store.get(name).digest
    finally:
        api.client.__exit__(None, None, None)


def test_a_node_resolves_a_rootfs_ref_by_disk_digest_or_names_it(vm_ctx: Any) -> None:
    """What a real node does with the `sha256:REF` the control plane asks for."""
    import asyncio

    from corral.errors import NotFound
    from corral.image_refs import resolve_image
    from corral.node.local import LocalNode
    from corral.node.protocol import NodeVmSpec

    digest = vm_ctx.store.get("tiny").digest
    assert resolve_image(vm_ctx, f"sha256:{digest}") == "tiny"
    unknown = "ab" * 32
    spec = NodeVmSpec(name=vm_name(unknown), image=f"sha256:{unknown}", memory_mib=256)
    with pytest.raises(NotFound, match=f"no corral image has the digest {unknown}"):
        asyncio.run(LocalNode(vm_ctx).create_vm(spec))
    assert not vm_ctx.home.instance(spec.name).dir.exists()
