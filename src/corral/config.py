"""User configuration: defaults, then a TOML file, then CORRAL_* environment variables.

The result is a frozen value passed down explicitly; nothing reads the environment later.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corral.errors import InvalidInput

DEFAULT_PORT_RANGE = (18000, 18999)


def default_home() -> Path:
    """Where state lives by default: /var/lib/corral for root, else the XDG data dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/corral")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "corral"


def default_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral" / "config.toml"


def default_cache_dir() -> Path:
    """Host-wide cache (accelerator probe), shared by every state directory on this host."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "corral"


@dataclass(frozen=True)
class Config:
    """Everything corral needs to know about the user's choices."""

    home: Path = field(default_factory=default_home)
    qemu_system: str = "qemu-system-x86_64"
    qemu_img: str = "qemu-img"
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    ssh_key: Path | None = None
    accelerator: str = "auto"
    debian_mirror: str = "http://deb.debian.org/debian"
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Image catalog additions and overrides: a TOML file, then the [catalog] table (same shape
    # as the built-in catalog: distros.NAME and images."ALIAS").
    catalog_file: Path | None = None
    catalog: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # Control plane (`corral serve`). No database: an SQLite file in the state directory and
    # this machine as its one host, in-process.
    database: str | None = None
    cpu_overcommit: float = 4.0  # vCPUs schedulable per host CPU
    memory_overcommit: float = 1.0  # bytes schedulable per byte of host memory
    health_interval: float = 5.0  # seconds between health checks of each host
    down_after: float = 15.0  # seconds without an answer before a host is marked down
    heartbeat_interval: float = 5.0  # PostgreSQL: seconds between a serve process's heartbeats
    process_timeout: float = 30.0  # seconds of silence before its jobs are failed by others
    allocation_token_hash: str | None = None  # sha256 hex of aleph-vm's X-Auth-Signature
    developer_ssh_keys: tuple[str, ...] = ()  # added to every VM's cloud-init
    vm_default_image: str | None = None  # image for VMs that name only a boot source
    # aleph-vm instances: an allocation naming an unknown item hash makes its VM from
    # <aleph_messages_dir>/<hash>.json, else (fake-instance mode) from the one fake message;
    # the fake base (a corral image name, or a disk image file on the embedded server) then
    # replaces every rootfs, and aleph_images maps rootfs refs to corral images.
    aleph_messages_dir: Path | None = None
    aleph_fake_instance_message: Path | None = None
    aleph_fake_instance_base: str | None = None
    aleph_images: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The network allocations start VMs on (none: a user-mode NIC).
    default_network: str | None = None
    # Storage pools (control plane) and the files nodes boot from (node agent) must lie under
    # one of these directories. None: $CORRAL_HOME/pools; an empty tuple allows none.
    storage_roots: tuple[Path, ...] | None = None

    def pool_roots(self) -> tuple[Path, ...]:
        """The directories storage pools and node boot files are confined to."""
        if self.storage_roots is None:
            return (self.home / "pools",)
        return self.storage_roots

    # `corral serve` and `corral node`: the largest request body they read (bytes); a larger
    # one is refused with 413 before it is read.
    max_body_bytes: int = 1 << 20


_ENV = {
    "CORRAL_HOME": "home",
    "CORRAL_QEMU_SYSTEM": "qemu_system",
    "CORRAL_QEMU_IMG": "qemu_img",
    "CORRAL_PORT_RANGE": "port_range",
    "CORRAL_SSH_KEY": "ssh_key",
    "CORRAL_ACCEL": "accelerator",
    "CORRAL_DEBIAN_MIRROR": "debian_mirror",
    "CORRAL_CACHE_DIR": "cache_dir",
    "CORRAL_CATALOG_FILE": "catalog_file",
    "CORRAL_DATABASE": "database",
    "CORRAL_CPU_OVERCOMMIT": "cpu_overcommit",
    "CORRAL_MEMORY_OVERCOMMIT": "memory_overcommit",
    "CORRAL_HEALTH_INTERVAL": "health_interval",
    "CORRAL_DOWN_AFTER": "down_after",
    "CORRAL_HEARTBEAT_INTERVAL": "heartbeat_interval",
    "CORRAL_PROCESS_TIMEOUT": "process_timeout",
    "CORRAL_ALLOCATION_TOKEN_HASH": "allocation_token_hash",
    "CORRAL_DEVELOPER_SSH_KEYS": "developer_ssh_keys",  # a JSON list, as aleph-vm takes it
    "CORRAL_VM_DEFAULT_IMAGE": "vm_default_image",
    "CORRAL_ALEPH_MESSAGES_DIR": "aleph_messages_dir",
    "CORRAL_ALEPH_FAKE_INSTANCE_MESSAGE": "aleph_fake_instance_message",
    "CORRAL_ALEPH_FAKE_INSTANCE_BASE": "aleph_fake_instance_base",
    "CORRAL_ALEPH_IMAGES": "aleph_images",  # a JSON object: rootfs ref -> corral image name
    "CORRAL_DEFAULT_NETWORK": "default_network",
    "CORRAL_STORAGE_ROOTS": "storage_roots",  # directories separated by ':'
    "CORRAL_MAX_BODY_BYTES": "max_body_bytes",
}
# aleph-vm's own names for the same settings (its QEMU walkthrough sets them); CORRAL_* win.
_ALEPH_ENV = {
    "ALEPH_VM_ALLOCATION_TOKEN_HASH": "allocation_token_hash",
    "ALEPH_VM_DEVELOPER_SSH_KEYS": "developer_ssh_keys",
    "ALEPH_VM_FAKE_INSTANCE_MESSAGE": "aleph_fake_instance_message",
    "ALEPH_VM_FAKE_INSTANCE_BASE": "aleph_fake_instance_base",
}
_KEYS = set(_ENV.values()) | {"catalog"}


def load_config(env: dict[str, str] | None = None, file: Path | None = None) -> Config:
    """Build the Config from defaults, the config file (if present) and the environment."""
    env = dict(os.environ if env is None else env)
    path = file or Path(env.get("CORRAL_CONFIG") or default_config_file())
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"config file {path}: {exc}") from exc
        unknown = set(data) - _KEYS
        if unknown:
            raise InvalidInput(f"config file {path}: unknown key {sorted(unknown)[0]!r}")
        if isinstance(data.get("catalog_file"), str):  # relative to the config file
            data["catalog_file"] = str(path.parent / Path(data["catalog_file"]).expanduser())
        values.update(data)
    for var, key in _ALEPH_ENV.items():
        if env.get(var) and (key != "aleph_fake_instance_base" or _true(env, _USE_FAKE_BASE)):
            values[key] = env[var]
    for var, key in _ENV.items():
        if env.get(var):
            values[key] = env[var]
    config = _coerce(Config(), values)
    if config.process_timeout < 2 * config.heartbeat_interval:
        # A process that beats on time would be taken for dead, and its jobs failed.
        raise InvalidInput(
            f"process_timeout ({config.process_timeout:g} s) must be at least twice "
            f"heartbeat_interval ({config.heartbeat_interval:g} s)"
        )
    return config


_USE_FAKE_BASE = "ALEPH_VM_USE_FAKE_INSTANCE_BASE"  # aleph-vm uses its fake base only if set


def _true(env: Mapping[str, str], var: str) -> bool:
    return env.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _coerce(base: Config, values: dict[str, Any]) -> Config:
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("aleph_messages_dir", "aleph_fake_instance_message"):
            changes[key] = Path(str(value)).expanduser().absolute()
        elif key == "aleph_images":
            changes[key] = parse_image_map(value)
        elif key == "aleph_fake_instance_base":
            text = str(value)
            if not (text.startswith("/") or _IMAGE_NAME.fullmatch(text)):
                raise InvalidInput(
                    f"aleph_fake_instance_base must be an image name or an absolute path, "
                    f"not {value!r}"
                )
            changes[key] = text
        elif key == "default_network":
            if not _NETWORK_NAME.fullmatch(str(value)):
                raise InvalidInput(f"default_network must be a network name, not {value!r}")
            changes[key] = str(value)
        elif key in ("home", "cache_dir"):
            changes[key] = Path(str(value)).expanduser().absolute()
        elif key in ("ssh_key", "catalog_file"):
            changes[key] = Path(str(value)).expanduser()
        elif key == "catalog":
            if not isinstance(value, dict):
                raise InvalidInput('catalog must be a table: [catalog.images."ALIAS"] ...')
            changes[key] = value
        elif key == "port_range":
            changes[key] = parse_port_range(value)
        elif key in _POSITIVE_FLOATS:
            changes[key] = _positive_float(key, value)
        elif key == "allocation_token_hash":
            text = str(value).strip().lower()
            if not re.fullmatch(r"[0-9a-f]{64}", text):
                raise InvalidInput(
                    f"allocation_token_hash must be 64 hex digits (sha256), not {value!r}"
                )
            changes[key] = text
        elif key == "developer_ssh_keys":
            changes[key] = parse_key_list(value)
        elif key == "storage_roots":
            changes[key] = parse_storage_roots(value)
        elif key == "max_body_bytes":
            changes[key] = parse_size_limit(key, value)
        elif key == "accelerator":
            if value not in ("auto", "kvm", "tcg"):
                raise InvalidInput(f"accelerator must be auto, kvm or tcg, not {value!r}")
            changes[key] = value
        else:
            changes[key] = str(value)
    return replace(base, **changes)


_POSITIVE_FLOATS = (
    "cpu_overcommit", "memory_overcommit", "health_interval", "down_after", "heartbeat_interval",
    "process_timeout",
)  # fmt: skip


def _positive_float(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0 < number < float("inf"):
        raise InvalidInput(f"{key} must be a positive number, not {value!r}")
    return number


_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
_NETWORK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_REF = re.compile(r"[A-Za-z0-9]{1,128}")


def parse_image_map(value: Any) -> dict[str, str]:
    """aleph rootfs refs -> corral image names: a table, or the same as a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"aleph_images must be a JSON object: {exc}") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidInput("aleph_images must map rootfs refs to corral image names")
    for ref, image in value.items():
        if not _REF.fullmatch(ref) or not _IMAGE_NAME.fullmatch(image):
            raise InvalidInput(f"aleph_images: {ref!r} -> {image!r} is not a ref and an image name")
    return dict(value)


def parse_size_limit(key: str, value: Any) -> int:
    """A whole number of bytes, at least 1 KiB (an API request with its headers' worth of JSON)."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1024:
        raise InvalidInput(f"{key} must be a whole number of bytes, at least 1024, not {value!r}")
    return int(text)


def parse_key_list(value: Any) -> tuple[str, ...]:
    """Accept a list of ssh public key lines, or the same list as JSON text (aleph-vm's form)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(
                f"developer_ssh_keys must be a JSON list of key lines: {exc}"
            ) from exc
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise InvalidInput("developer_ssh_keys must be a list of ssh public key lines")
    return tuple(k.strip() for k in value if k.strip())


def parse_storage_roots(value: Any) -> tuple[Path, ...]:
    """Absolute directories, as a list or as text separated by ':'; '/' would confine nothing."""
    items = value.split(":") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise InvalidInput("storage_roots must be a list of absolute directories")
    roots = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        path = Path(item).expanduser()
        if not path.is_absolute() or ".." in path.parts or "\0" in item or "\n" in item:
            raise InvalidInput(f"storage_roots: {item!r} is not an absolute directory")
        path = Path(os.path.normpath(path))
        if path == Path("/"):
            raise InvalidInput("storage_roots: '/' would confine nothing; name a directory")
        roots.append(path)
    return tuple(dict.fromkeys(roots))


def parse_port_range(value: Any) -> tuple[int, int]:
    """Accept '18000-18999' or [18000, 18999]."""
    try:
        if isinstance(value, str):
            low, high = (int(p) for p in value.split("-", 1))
        else:
            low, high = (int(p) for p in value)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid port range {value!r}: expected LOW-HIGH") from exc
    if not 1024 <= low <= high <= 65535:
        raise InvalidInput(f"invalid port range {value!r}: need 1024 <= LOW <= HIGH <= 65535")
    return low, high
