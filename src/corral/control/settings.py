"""The control plane's settings: one frozen value, built from the corral config or by tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.config import Config
from corral.db.engine import check_url
from corral.layout import Home
from corral.private import make_private

LOCAL_HOST = "local"  # the name of this machine as a host, in embedded mode
IN_PROCESS = "in-process"  # the address of a host served by an in-process LocalNode


@dataclass(frozen=True)
class Settings:
    database_url: str
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    health_interval: float = 5.0  # seconds between health checks; 0 turns them off
    down_after: float = 15.0  # seconds without an answer before a host is `down`
    node_timeout: float = 10.0  # seconds a health check may take
    allocation_token_hash: str | None = None
    developer_ssh_keys: tuple[str, ...] = ()
    vm_default_image: str | None = None  # for VMs that name only a boot source (qarax's VM_ROOTFS)
    # aleph-vm instance messages (see corral.control.aleph and Config)
    aleph_messages_dir: Path | None = None
    aleph_fake_instance_message: Path | None = None
    aleph_fake_instance_base: str | None = None
    aleph_images: Mapping[str, str] = field(default_factory=dict, hash=False)
    default_network: str | None = None  # the network allocations start VMs on (none: user-mode)
    event_keepalive: float = 15.0  # seconds between keep-alive comments on a quiet /events
    allocation_timeout: float = 300.0  # seconds POST /control/allocations waits for its jobs
    migrate: bool = True  # apply the migrations on start
    # PostgreSQL, several processes: each says it is alive this often; one silent for
    # process_timeout seconds has its unfinished jobs failed by the others (0: no heartbeat).
    heartbeat_interval: float = 5.0
    process_timeout: float = 30.0
    max_body_bytes: int = 1 << 20  # larger request bodies are refused (413) before being read
    # Embedded mode: register this machine as host `local`, served in-process by a LocalNode
    # on `config`'s state directory.
    local_node: bool = False
    config: Config | None = field(default=None, compare=False)
    # Storage pools may only be created under these directories (none: no pools at all).
    storage_roots: tuple[Path, ...] = ()

    @classmethod
    def from_config(cls, config: Config, *, database: str | None = None, **overrides) -> Settings:
        """Settings for `corral serve`: no database anywhere means embedded mode."""
        url = database or config.database
        embedded = url is None
        if url is None:
            make_private(Home(config.home))  # the database goes inside: tighten an old install
            url = f"sqlite:///{config.home / 'corral.db'}"
        values: dict[str, Any] = dict(
            database_url=check_url(url),
            cpu_overcommit=config.cpu_overcommit,
            memory_overcommit=config.memory_overcommit,
            health_interval=config.health_interval,
            down_after=config.down_after,
            heartbeat_interval=config.heartbeat_interval,
            process_timeout=config.process_timeout,
            max_body_bytes=config.max_body_bytes,
            allocation_token_hash=config.allocation_token_hash,
            developer_ssh_keys=config.developer_ssh_keys,
            vm_default_image=config.vm_default_image,
            aleph_messages_dir=config.aleph_messages_dir,
            aleph_fake_instance_message=config.aleph_fake_instance_message,
            aleph_fake_instance_base=config.aleph_fake_instance_base,
            aleph_images=dict(config.aleph_images),
            default_network=config.default_network,
            local_node=embedded,
            config=config,
            storage_roots=config.pool_roots(),
        )
        values.update(overrides)
        return cls(**values)
