"""Rendering of NoCloud seed files: pure functions from typed inputs to bytes.

The ssh keys corral needs always reach the guest twice: in meta-data's `public-keys` (which
cloud-init gives to the image's default user whatever the user-data format) and, for a
`#cloud-config` user-data, merged into the document itself. Other user-data formats (shell
scripts, MIME multipart, #include) are passed through byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from corral.errors import InvalidInput

CLOUD_CONFIG = "#cloud-config"


@dataclass(frozen=True)
class SeedInput:
    """Everything that goes into one instance's seed."""

    instance_id: str
    hostname: str
    user: str
    ssh_keys: tuple[str, ...]
    user_data: bytes | None = None
    network_config: bytes | None = None
    vendor_data: bytes | None = None
    meta_data: bytes | None = None  # the user's own meta-data, merged over corral's


def is_cloud_config(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf").startswith(CLOUD_CONFIG.encode())


def _dump(header: str | None, document: dict[str, Any]) -> bytes:
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return (f"{header}\n{body}" if header else body).encode()


def render_meta_data(seed: SeedInput) -> bytes:
    """instance-id, local-hostname and public-keys; the user's meta-data wins where it says so.

    The user's public-keys are added to corral's rather than replacing them, so corral can
    still reach the guest.
    """
    document: dict[str, Any] = {
        "instance-id": seed.instance_id,
        "local-hostname": seed.hostname,
    }
    keys = list(seed.ssh_keys)
    if seed.meta_data is not None:
        try:
            theirs = yaml.safe_load(seed.meta_data) or {}
        except yaml.YAMLError as exc:
            raise InvalidInput(f"meta-data is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(theirs, dict):
            raise InvalidInput("meta-data must be a YAML mapping")
        extra = theirs.pop("public-keys", None) or []
        keys += [k for k in (extra if isinstance(extra, list) else [extra]) if k not in keys]
        document.update(theirs)
    if keys:
        document["public-keys"] = keys
    return _dump(None, document)


def _user_entry(user: str, keys: Sequence[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": user, "ssh_authorized_keys": list(keys)}
    if user != "root":
        entry.update(sudo="ALL=(ALL) NOPASSWD:ALL", shell="/bin/bash", lock_passwd=True)
    return entry


def default_user_data(user: str, keys: Sequence[str]) -> bytes:
    """Create the image's default user with the keys and passwordless sudo."""
    return _dump(CLOUD_CONFIG, {"users": [_user_entry(user, keys)], "ssh_pwauth": False})


def merge_keys(user_data: bytes, user: str, keys: Sequence[str]) -> bytes:
    """Merge keys into a #cloud-config document; pass any other format through untouched."""
    if not is_cloud_config(user_data) or not keys:
        return user_data
    try:
        document = yaml.safe_load(user_data) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"user-data is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(document, dict):
        raise InvalidInput("user-data #cloud-config must be a mapping")
    top = list(document.get("ssh_authorized_keys") or [])
    document["ssh_authorized_keys"] = top + [k for k in keys if k not in top]
    users = document.get("users")
    if users is not None:
        users = list(users) if isinstance(users, list) else [users]
        if not any(_names(u, user) for u in users):
            # The document replaces the default user list; keep a way in for corral.
            users.append(_user_entry(user, keys))
        else:
            users = [_with_keys(u, user, keys) for u in users]
        document["users"] = users
    return _dump(CLOUD_CONFIG, document)


def _names(entry: Any, user: str) -> bool:
    return entry == "default" or (isinstance(entry, dict) and entry.get("name") == user)


def _with_keys(entry: Any, user: str, keys: Sequence[str]) -> Any:
    if isinstance(entry, dict) and entry.get("name") == user:
        have = list(entry.get("ssh_authorized_keys") or [])
        return {**entry, "ssh_authorized_keys": have + [k for k in keys if k not in have]}
    return entry


def render_seed_files(seed: SeedInput) -> dict[str, bytes]:
    """The files of the cidata volume."""
    if seed.user_data is None:
        user_data = default_user_data(seed.user, seed.ssh_keys)
    else:
        user_data = merge_keys(seed.user_data, seed.user, seed.ssh_keys)
    files = {"meta-data": render_meta_data(seed), "user-data": user_data}
    if seed.network_config is not None:
        files["network-config"] = seed.network_config
    if seed.vendor_data is not None:
        files["vendor-data"] = seed.vendor_data
    return files
