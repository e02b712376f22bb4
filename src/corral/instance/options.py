"""Launch options: what the user asked for, parsed from user-facing values and validated."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import InvalidInput, NotFound
from corral.image.manifest import Manifest
from corral.instance.record import check_instance_name
from corral.machine.spec import Forward, parse_forward
from corral.units import (
    check_cpus,
    check_memory,
    format_size,
    parse_instance_type,
    parse_memory_mib,
    parse_size,
)

Data = str | bytes | os.PathLike[str] | None


def read_data(value: Data) -> bytes | None:
    """User data may be given as text, bytes or a path to a file."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, os.PathLike):
        return Path(value).read_bytes()
    return value.encode()


DEFAULT_CPUS = 2
DEFAULT_MEMORY_MIB = 2048


@dataclass(frozen=True)
class LaunchOptions:
    """What the user asked for; validated before anything is created."""

    name: str
    cpus: int = DEFAULT_CPUS
    memory_mib: int = DEFAULT_MEMORY_MIB
    disk_size: int | None = None
    volumes: tuple[int, ...] = ()
    ssh_keys: tuple[Path, ...] = ()
    user_data: bytes | None = None
    network_config: bytes | None = None
    vendor_data: bytes | None = None
    meta_data: bytes | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    forwards: tuple[Forward, ...] = field(default=())
    seed: bool = True
    ssh_user: str | None = None


def validate(options: LaunchOptions, image: Manifest) -> int:
    """Check the options against the image; return the disk size to use."""
    check_instance_name(options.name)
    check_cpus(options.cpus)
    check_memory(options.memory_mib)
    disk_size = options.disk_size or image.virtual_size
    if disk_size < image.virtual_size:
        raise InvalidInput(
            f"disk size {format_size(disk_size)} is smaller than image {image.name!r} "
            f"({format_size(image.virtual_size)}); disks are never truncated"
        )
    for path in (options.kernel, options.initrd):
        if path is not None and not path.is_file():
            raise NotFound(f"no such file: {path}")
    if options.kernel is None and (options.initrd or options.cmdline) and image.kernel is None:
        raise InvalidInput("--initrd and --cmdline need a kernel (--kernel or an image with one)")
    for size in options.volumes:
        if size <= 0:
            raise InvalidInput("a volume size must be greater than zero")
    seen: set[tuple[int, str]] = set()
    for fwd in options.forwards:
        if (fwd.host_port, fwd.protocol) in seen:
            raise InvalidInput(f"host port {fwd.host_port} is forwarded twice")
        seen.add((fwd.host_port, fwd.protocol))
    return disk_size


def make_options(
    *,
    name: str,
    instance_type: str | None = None,
    cpus: int | None = None,
    memory: str | int | None = None,
    disk_size: str | int | None = None,
    volumes: Iterable[str | int] = (),
    ssh_keys: Iterable[str | os.PathLike[str]] = (),
    user_data: Data = None,
    network_config: Data = None,
    vendor_data: Data = None,
    meta_data: Data = None,
    kernel: str | os.PathLike[str] | None = None,
    initrd: str | os.PathLike[str] | None = None,
    cmdline: str | None = None,
    forwards: Iterable[str | Forward] = (),
    seed: bool = True,
) -> LaunchOptions:
    """Turn user-facing values (strings, sizes, paths) into validated LaunchOptions."""
    if instance_type is not None and (cpus is not None or memory is not None):
        raise InvalidInput("give either an instance type or cpus/memory, not both")
    if instance_type is not None:
        itype = parse_instance_type(instance_type)
        n_cpus, memory_mib = itype.cpus, itype.memory_mib
    else:
        n_cpus = DEFAULT_CPUS if cpus is None else cpus
        memory_mib = DEFAULT_MEMORY_MIB if memory is None else parse_memory_mib(memory)
    return LaunchOptions(
        name=name,
        cpus=n_cpus,
        memory_mib=memory_mib,
        disk_size=None if disk_size is None else parse_size(disk_size, what="disk size"),
        volumes=tuple(parse_size(v, default_unit="G", what="volume size") for v in volumes),
        ssh_keys=tuple(Path(k).expanduser() for k in ssh_keys),
        user_data=read_data(user_data),
        network_config=read_data(network_config),
        vendor_data=read_data(vendor_data),
        meta_data=read_data(meta_data),
        kernel=Path(kernel) if kernel else None,
        initrd=Path(initrd) if initrd else None,
        cmdline=cmdline,
        forwards=tuple(f if isinstance(f, Forward) else parse_forward(f) for f in forwards),
        seed=seed,
    )
