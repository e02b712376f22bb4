"""A control plane in a process of its own, whose nodes never finish creating a VM:
`python plane_process.py DATABASE_URL PORT` (killed by the test that starts it)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

from corral.api.app import create_app
from corral.control.settings import Settings
from corral.node.protocol import Capacity


class SlowNode:
    """Healthy, with room; a VM create never returns."""

    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def capacity(self) -> Capacity:
        return Capacity(cpus=8, memory_mib=16384, disk_bytes=1 << 40, arch="x86_64",
                        accelerator="tcg", versions={"corral": "test"})  # fmt: skip

    async def list_vms(self) -> list[Any]:
        return []

    async def list_networks(self) -> list[Any]:
        return []

    async def create_vm(self, spec: Any) -> Any:
        await asyncio.sleep(3600)

    async def close(self) -> None:
        pass


def main() -> None:
    url, port = sys.argv[1], int(sys.argv[2])
    node = SlowNode()
    settings = Settings(database_url=url, health_interval=0, heartbeat_interval=0.2)
    app = create_app(settings, node_factory=lambda where: node)  # type: ignore[arg-type, return-value]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
