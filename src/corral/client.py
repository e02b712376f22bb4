"""The Python API: `Corral` (one state directory) and `Instance` (one VM).

In the spirit of pycloudlib's Qemu cloud: launch an image with an instance type, wait, execute,
stop, start, delete. The CLI is a thin layer over exactly these calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

from corral.config import Config, load_config
from corral.context import Context
from corral.errors import InvalidInput
from corral.guest.ssh import ExecResult
from corral.image.manifest import Manifest
from corral.image_refs import resolve_image
from corral.instance import guestops, lifecycle, registry, snapshot
from corral.instance.launch import launch
from corral.instance.options import Data, LaunchFields, LaunchRequest, read_data
from corral.instance.record import InstanceRecord
from corral.instance.state import Observed, observe


class Instance:
    """A handle on one VM; every property reads the instance directory afresh."""

    def __init__(self, ctx: Context, name: str) -> None:
        self._ctx = ctx
        self.name = name

    def __repr__(self) -> str:
        return f"Instance({self.name!r})"

    @property
    def record(self) -> InstanceRecord:
        return registry.load_named(self._ctx.home, self.name)[1]

    @property
    def observed(self) -> Observed:
        files, record = registry.load_named(self._ctx.home, self.name)
        return observe(record, files)

    @property
    def state(self) -> str:
        return self.observed.state

    @property
    def ssh_port(self) -> int:
        """The host port forwarded to its SSH (0 on a managed network: see `address`)."""
        return self.record.ssh_port

    @property
    def address(self) -> str | None:
        """Its address on its first managed network (None on user-mode networking)."""
        return self.record.address

    @property
    def console(self) -> Path:
        """The serial console's unix socket (see also `serial_log`)."""
        return self._ctx.home.instance(self.name).serial_socket

    @property
    def serial_log(self) -> Path:
        return self._ctx.home.instance(self.name).serial_log

    @property
    def pid(self) -> int | None:
        return self.observed.pid

    def wait(self, timeout: float = 300) -> None:
        guestops.wait_ready(self._ctx, self.name, timeout=timeout)

    def execute(
        self, command: str | Sequence[str], *, stdin: Data = None, timeout: float | None = None
    ) -> ExecResult:
        return guestops.execute(
            self._ctx, self.name, command, stdin=read_data(stdin), timeout=timeout
        )

    def push(self, local: str | os.PathLike[str], remote: str) -> None:
        guestops.copy(self._ctx, os.fspath(local), f"{self.name}:{remote}")

    def pull(self, remote: str, local: str | os.PathLike[str]) -> None:
        guestops.copy(self._ctx, f"{self.name}:{remote}", os.fspath(local))

    def stop(self, *, force: bool = False, timeout: float = 60) -> None:
        lifecycle.stop(self._ctx, self.name, force=force, timeout=timeout)

    def start(self, *, wait: bool = False, timeout: float = 300) -> None:
        lifecycle.start(self._ctx, self.name)
        if wait:
            self.wait(timeout)

    def restart(self, *, wait: bool = False, timeout: float = 300) -> None:
        lifecycle.restart(self._ctx, self.name)
        if wait:
            self.wait(timeout)

    def pause(self) -> None:
        lifecycle.pause(self._ctx, self.name)

    def resume(self) -> None:
        lifecycle.resume(self._ctx, self.name)

    def snapshot(self, image_name: str, *, memory: bool = False, stop: bool = False) -> Manifest:
        """Save the disk as a new image (works on running and stopped VMs). memory=True: a
        running VM's memory too, as a warm image (launches restore it); stop=True then stops
        the VM instead of letting it run on."""
        if memory:
            from corral.instance.warm import save_warm

            return save_warm(self._ctx, self.name, image_name, stop=stop)
        if stop:
            raise InvalidInput("stop=True goes with memory=True")
        return snapshot.snapshot_as_image(self._ctx, self.name, image_name)

    def delete(self, *, force: bool = True) -> None:
        """Remove the VM and everything it owns; like pycloudlib, a running VM is killed."""
        lifecycle.remove(self._ctx, self.name, force=force)


class Corral:
    """One corral state directory: its images and instances."""

    def __init__(self, config: Config | None = None, *, home: str | os.PathLike[str] | None = None):
        config = config or load_config()
        if home is not None:
            from dataclasses import replace

            config = replace(config, home=Path(home).absolute())
        self.ctx = Context(config)

    @property
    def config(self) -> Config:
        return self.ctx.config

    def launch(
        self,
        image: str,
        *,
        start: bool = True,
        wait: bool = False,
        timeout: float = 300,
        **request: Unpack[LaunchFields],
    ) -> Instance:
        """Launch `image` as a new VM; with wait=True, return once it is ready. start=False
        creates it stopped (`Instance.start()` boots it).

        `request` is the launch parameters, as corral.instance.options.LaunchRequest names them:
        name (required), instance_type (or cpus and memory), disk_size, volumes, ssh_keys,
        user_data, network_config, vendor_data, meta_data, kernel, initrd, cmdline, forwards,
        seed, cold_if_needed. A warm image restores its saved state (see README, Warm starts)."""
        if wait and not start:
            raise InvalidInput("wait=True needs start=True: a VM created stopped is never ready")
        options = LaunchRequest(**request).options()
        launch(self.ctx, resolve_image(self.ctx, image), options, start=start)
        instance = Instance(self.ctx, options.name)
        if wait:
            instance.wait(timeout)
        return instance

    def get(self, name: str) -> Instance:
        registry.load_named(self.ctx.home, name)
        return Instance(self.ctx, name)

    def instances(self) -> list[Instance]:
        return [Instance(self.ctx, record.name) for record, _ in lifecycle.list_instances(self.ctx)]

    def images(self) -> list[Manifest]:
        return self.ctx.store.list()

    def import_image(self, path: str | os.PathLike[str], name: str, **kw: Any) -> Manifest:
        return self.ctx.store.import_image(Path(path), name, **kw)

    def warm_image(
        self,
        image: str,
        as_name: str,
        *,
        instance_type: str | None = None,
        cpus: int | None = None,
        memory: str | int | None = None,
        user_data: Data = None,
        timeout: float = 600,
    ) -> Manifest:
        """Boot `image` once, wait until ready and save it warm as `as_name` (`corral image
        warm`); its clones need the same cpus and memory."""
        from corral.instance.warm_image import make_warm_image

        options = LaunchRequest(
            name="warm", instance_type=instance_type, cpus=cpus, memory=memory,
            user_data=user_data,
        ).options()  # fmt: skip
        name = resolve_image(self.ctx, image)
        return make_warm_image(self.ctx, name, as_name, options, timeout=timeout)


def launch_instance(
    image: str,
    *,
    start: bool = True,
    wait: bool = False,
    timeout: float = 300,
    **request: Unpack[LaunchFields],
) -> Instance:
    """`corral.launch(image, name=..., ...)` on the default state directory."""
    return Corral().launch(image, start=start, wait=wait, timeout=timeout, **request)
