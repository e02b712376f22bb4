"""aleph-vm instance messages, read from files, made into corral VMs.

An allocation may name an item hash that is not yet a corral VM. Its message is then read from
the configured directory (`<item_hash>.json`, the `qemu_message_from_aleph.json` shape), or, in
fake-instance mode, the one configured message stands for every hash; the VM is made from it:
`content.resources` (vcpus, memory MiB), `content.rootfs` (parent.ref: a corral image through
the configured mapping, or the image whose disk digest it is; the fake base overrides it;
size_mib), `authorized_keys`, `volumes` (`persistence: host` ones become blank disks, formatted
and mounted by cloud-init), `variables` (written to /etc/environment) and `cloud_config`
(merged into the user-data). Immutable `ref` volumes live on the aleph network, which corral
cannot fetch from: such a VM is made without them, and the allocation's answer says so.

VM names are hostnames of at most 63 characters, and an item hash has 64: the VM of hash H is
named `aleph-` followed by H's first 20 hex digits (80 bits; short enough for the socket paths
of any state directory), and carries the tag `aleph`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from corral.control.types import MIB, SshKey, VmCreate
from corral.errors import InvalidInput, NotFound

ITEM_HASH = re.compile(r"[0-9a-f]{64}")
NAME_PREFIX = "aleph-"
TAG = "aleph"
DIGEST_PREFIX = "sha256:"  # an image reference the node resolves by disk digest

Ref = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]+$")]
VarName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
VarValue = Annotated[str, StringConstraints(max_length=4096, pattern=r'^[^\x00-\x1f"\\$`]*$')]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore")  # aleph's messages carry much corral ignores


class Parent(_Shape):
    ref: Ref
    use_latest: bool = False


class RootFs(_Shape):
    parent: Parent
    persistence: str | None = None
    size_mib: int | None = Field(None, ge=1, le=1 << 30)


class Resources(_Shape):
    vcpus: int = Field(1, ge=1, le=1024)
    memory: int = Field(ge=64, le=1 << 30, description="MiB")


MountPath = Annotated[
    str, StringConstraints(min_length=2, max_length=1024, pattern=r"^/[^\x00-\x20\x7f\\]+$")
]  # one fstab field: no blanks, control characters or escapes


class Volume(_Shape):
    mount: MountPath
    ref: Ref | None = None
    persistence: str | None = None
    size_mib: int | None = Field(None, ge=1, le=1 << 30)
    name: str | None = None


class Content(_Shape):
    resources: Resources
    rootfs: RootFs
    authorized_keys: list[SshKey] = Field(default_factory=list, max_length=64)
    volumes: list[Volume] = Field(default_factory=list, max_length=16)
    variables: dict[VarName, VarValue] = Field(default_factory=dict, max_length=256)
    cloud_config: dict[str, Any] | None = None


class Message(_Shape):
    content: Content


def vm_name(item_hash: str) -> str:
    return NAME_PREFIX + item_hash[:20]


def is_item_hash(ref: str) -> bool:
    return ITEM_HASH.fullmatch(ref) is not None


def message_path(item_hash: str, directory: Path | None, fake: Path | None) -> Path | None:
    """The file holding the message of `item_hash`: its own, else the fake-instance one."""
    if not is_item_hash(item_hash):
        return None  # also: nothing else ever becomes part of a path
    if directory is not None:
        own = directory / f"{item_hash}.json"
        if own.is_file():
            return own
    return fake


def read_message(path: Path, item_hash: str) -> Message:
    try:
        with path.open("rb") as f:
            raw = f.read((1 << 20) + 1)
    except OSError as exc:
        raise NotFound(f"aleph message of {item_hash}: cannot read {path}: {exc.strerror}") from exc
    if len(raw) > 1 << 20:
        raise InvalidInput(f"aleph message {path} is larger than 1 MiB")
    try:
        return Message.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"] if first else exc
        raise InvalidInput(f"aleph message {path} is not an instance message ({where})") from None


def rootfs_image(ref: str, images: Mapping[str, str], fake_base: str | None) -> str:
    """The corral image a rootfs parent ref means (resolved by digest on the node)."""
    if fake_base is not None:
        return fake_base
    return images.get(ref) or DIGEST_PREFIX + ref


def vm_create(
    item_hash: str, message: Message, image: str, network: str | None = None
) -> tuple[VmCreate, list[str]]:
    """The VM of an instance message, and what of the message it could not honour.

    `network`: the node's default network, where the VM's one NIC goes (none: user-mode); it is
    asked for as a qarax interface entry naming a corral network. The rootfs `persistence` is
    not needed: a corral VM's disk is its own, kept until the VM is deleted."""
    content = message.content
    notes: list[str] = []
    sizes: list[int] = []
    mounts: list[tuple[int, str]] = []
    for volume in content.volumes:
        if volume.ref is not None and volume.persistence is None:
            notes.append(
                f"immutable volume {volume.ref} ({volume.mount}) is on the aleph network, "
                "which corral does not fetch from: not mounted"
            )
            continue
        if volume.size_mib is None:
            raise InvalidInput(f"aleph volume {volume.mount}: a host volume needs size_mib")
        sizes.append(volume.size_mib * MIB)
        mounts.append((len(sizes), volume.mount))
    user_data = cloud_config(mounts, content.variables, content.cloud_config or {})
    data = VmCreate.model_validate(
        {
            "name": vm_name(item_hash),
            "boot_vcpus": content.resources.vcpus,
            "memory_size": content.resources.memory * MIB,
            "image": image,
            "disk_size": content.rootfs.size_mib * MIB if content.rootfs.size_mib else None,
            "user_data": user_data,
            "ssh_keys": content.authorized_keys,
            "volumes": sizes,
            "networks": [] if network is None else [{"id": "net0", "network": network}],
            "tags": [TAG],
            "start": True,
        }
    )
    return data, notes


def cloud_config(
    mounts: list[tuple[int, str]], variables: Mapping[str, str], extra: Mapping[str, Any]
) -> str | None:
    """#cloud-config: the message's own cloud_config, then corral's file systems, mounts and
    environment (lists are extended, not replaced)."""
    ours: dict[str, Any] = {}
    if mounts:
        device = "/dev/disk/by-id/virtio-vol{}".format
        ours["fs_setup"] = [
            {"label": f"vol{i}", "filesystem": "ext4", "device": device(i), "partition": "none"}
            for i, _ in mounts
        ]
        ours["mounts"] = [
            [device(i), path, "ext4", "defaults,nofail", "0", "2"] for i, path in mounts
        ]
    if variables:
        lines = "".join(f'{key}="{value}"\n' for key, value in variables.items())
        ours["write_files"] = [{"path": "/etc/environment", "content": lines, "append": True}]
    document: dict[str, Any] = dict(extra)
    for key, value in ours.items():
        theirs = document.get(key) or []
        if not isinstance(theirs, list):
            raise InvalidInput(f"aleph cloud_config: {key} must be a list")
        document[key] = [*theirs, *value]
    if not document:
        return None
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)
