"""Launch options: the launch parameters as a user gives them (LaunchRequest, what the CLI,
the Python API, the remote CLI and the node agent all take), and the validated LaunchOptions
they are parsed into.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Required, TypedDict

from corral.errors import InvalidInput, NotFound
from corral.guest.ssh_keys import KEY_PREFIXES, read_public_keys
from corral.image.manifest import Manifest
from corral.instance.record import check_instance_name
from corral.machine.spec import Forward, TapNic, parse_forward
from corral.net.model import check_mac
from corral.net.model import check_name as check_network_name
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


class PublicKey(str):
    """One ssh public key line (`ssh-ed25519 AAAA... me@host`), given as it is rather than in
    a file; refused (naming it as `what`) unless it is one."""

    def __new__(cls, line: str, *, what: str = "the ssh key") -> PublicKey:
        key = line.strip()
        if not key.startswith(KEY_PREFIXES) or "\n" in key or "\r" in key:
            raise InvalidInput(
                f"{what} is not one ssh public key line",
                hint="give the contents of a .pub file, e.g. 'ssh-ed25519 AAAA... me@host'",
            )
        return super().__new__(cls, key)


@dataclass(frozen=True)
class LaunchOptions:
    """What the user asked for; validated before anything is created."""

    name: str
    cpus: int = DEFAULT_CPUS
    memory_mib: int = DEFAULT_MEMORY_MIB
    disk_size: int | None = None
    volumes: tuple[int, ...] = ()
    ssh_keys: tuple[str, ...] = ()  # public key lines
    user_data: bytes | None = None
    network_config: bytes | None = None
    vendor_data: bytes | None = None
    meta_data: bytes | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    forwards: tuple[Forward, ...] = field(default=())
    nics: tuple[TapNic, ...] = ()  # NICs on existing host taps (then no user-mode NIC)
    networks: tuple[NetworkNic, ...] = ()  # NICs on managed networks (then no user-mode NIC)
    published: tuple[Forward, ...] = ()  # ports published (DNAT) to the first network's NIC
    seed: bool = True
    ssh_user: str | None = None
    # A warm image: were cpus and memory asked for (else the saved machine's are taken), and
    # may a launch that cannot restore its state boot cold instead of being refused.
    cpus_given: bool = field(default=True, compare=False)
    memory_given: bool = field(default=True, compare=False)
    cold_if_needed: bool = False
    # Lives only as long as this process (image warm's template): a kill -9 of it leaves an
    # instance the next command removes, not one running until someone notices.
    throwaway: bool = False


@dataclass(frozen=True)
class NetworkNic:
    """A NIC the VM is to have on a managed network: its name, and the address and MAC asked
    for (None: picked by the network). Checked here, before anything is created."""

    network: str
    ip: str | None = None
    mac: str | None = None

    def __post_init__(self) -> None:
        check_network_name(self.network)
        if self.ip is not None:
            try:
                ipaddress.IPv4Address(self.ip)
            except ValueError:
                raise InvalidInput(
                    f"invalid address {self.ip!r} for network {self.network!r}: expected IPv4"
                ) from None
        if self.mac is not None:
            object.__setattr__(self, "mac", check_mac(self.mac))


def parse_network(text: str) -> NetworkNic:
    """`NAME[,ip=ADDR][,mac=MAC]`: a NIC on the managed network NAME."""
    name, *rest = text.split(",")
    values: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or key not in ("ip", "mac") or key in values or not value:
            raise InvalidInput(f"invalid network {text!r}: expected NAME[,ip=ADDR][,mac=MAC]")
        values[key] = value
    return NetworkNic(name, values.get("ip"), values.get("mac"))


def validate(options: LaunchOptions, image: Manifest | None) -> int:
    """Check the options against the image (None: diskless, booted from its kernel and
    initramfs); return the disk size to use."""
    check_instance_name(options.name)
    check_cpus(options.cpus)
    check_memory(options.memory_mib)
    if image is None:
        if options.kernel is None:
            raise InvalidInput("a VM without an image boots from a kernel: give one")
        if options.disk_size is not None:
            raise InvalidInput("a VM without an image has no root disk to size")
    disk_size = 0 if image is None else _disk_size(options, image)
    for path in (options.kernel, options.initrd):
        if path is not None and not path.is_file():
            raise NotFound(f"no such file: {path}")
    if (
        options.kernel is None
        and (options.initrd or options.cmdline)
        and (image is None or image.kernel is None)
    ):
        raise InvalidInput("--initrd and --cmdline need a kernel (--kernel or an image with one)")
    _check_rest(options)
    return disk_size


def _disk_size(options: LaunchOptions, image: Manifest) -> int:
    disk_size = options.disk_size or image.virtual_size
    if disk_size < image.virtual_size:
        raise InvalidInput(
            f"disk size {format_size(disk_size)} is smaller than image {image.name!r} "
            f"({format_size(image.virtual_size)}); disks are never truncated"
        )
    return disk_size


def _check_rest(options: LaunchOptions) -> None:
    for size in options.volumes:
        if size <= 0:
            raise InvalidInput("a volume size must be greater than zero")
    seen: set[tuple[int, str]] = set()
    for fwd in options.forwards:
        if (fwd.host_port, fwd.protocol) in seen:
            raise InvalidInput(f"host port {fwd.host_port} is forwarded twice")
        seen.add((fwd.host_port, fwd.protocol))
    if options.nics and options.forwards:
        raise InvalidInput(
            "port forwards need the user-mode NIC, and a VM on taps has none",
            hint="reach it at its address on the taps' network",
        )
    taps = [nic.tap for nic in options.nics]
    if len(set(taps)) != len(taps):
        raise InvalidInput("a tap device can carry one NIC only")
    for tap in taps:
        check_tap_exists(tap)
    check_networks(options)


def check_networks(options: LaunchOptions) -> None:
    """--network against --forward and --publish: a VM on managed networks has no user-mode
    NIC, and publishes ports to its first network instead."""
    names = [nic.network for nic in options.networks]
    if len(set(names)) != len(names):
        raise InvalidInput("a VM has one NIC per network: a network is named twice")
    if options.networks and options.forwards:
        raise InvalidInput(
            "--forward needs the user-mode NIC, and a VM on a managed network has none",
            hint="publish its ports instead: --publish [ADDR:]HOSTPORT:GUESTPORT[/udp]",
        )
    if options.published and not options.networks:
        raise InvalidInput(
            "--publish needs a managed network (--network NAME)",
            hint="a VM on user-mode networking forwards ports: --forward HOSTPORT:GUESTPORT",
        )
    seen: set[tuple[int, str]] = set()
    for pub in options.published:
        if (pub.host_port, pub.protocol) in seen:
            raise InvalidInput(f"host port {pub.host_port} is published twice")
        seen.add((pub.host_port, pub.protocol))


@dataclass(frozen=True, kw_only=True)
class LaunchRequest:
    """The launch parameters as a user gives them (strings, sizes, paths): the one list of
    them, taken by `corral launch`, `Corral.launch`, `corral --remote ... launch` and the node
    agent. `options()` parses and checks them."""

    name: str  # also the VM's hostname
    instance_type: str | None = None  # c<cpus>m<memory MiB>, or cpus and memory
    cpus: int | None = None  # default DEFAULT_CPUS
    memory: str | int | None = None  # e.g. "2G"; a plain number is MiB; default 2 GiB
    disk_size: str | int | None = None  # default: the image's size
    volumes: Iterable[str | int] = ()  # blank data disks; a plain number is GiB
    ssh_keys: Iterable[str | os.PathLike[str]] = ()  # public key files, or PublicKey lines
    user_data: Data = None  # cloud-init files: text, bytes or a path
    network_config: Data = None
    vendor_data: Data = None
    meta_data: Data = None
    kernel: str | os.PathLike[str] | None = None  # boot this kernel directly
    initrd: str | os.PathLike[str] | None = None
    cmdline: str | None = None
    forwards: Iterable[str | Forward] = ()  # [ADDR:]HOSTPORT:GUESTPORT[/tcp|udp]
    nics: Iterable[str | TapNic] = ()  # NAME[,mac=MAC][,mtu=N]: NICs on existing host taps
    networks: Iterable[str | NetworkNic] = ()  # NAME[,ip=ADDR][,mac=MAC]: managed networks
    publish: Iterable[str | Forward] = ()  # [ADDR:]HOSTPORT:GUESTPORT[/udp] on a network
    seed: bool = True  # attach a cloud-init seed
    cold_if_needed: bool = False  # a warm image whose state cannot be restored here: boot cold

    def options(self) -> LaunchOptions:
        """Parse the values (reading the files they name) into LaunchOptions."""
        if self.instance_type is not None and (self.cpus is not None or self.memory is not None):
            raise InvalidInput("give either an instance type or cpus/memory, not both")
        if self.instance_type is not None:
            itype = parse_instance_type(self.instance_type)
            cpus, memory_mib = itype.cpus, itype.memory_mib
        else:
            cpus = DEFAULT_CPUS if self.cpus is None else self.cpus
            memory_mib = (
                DEFAULT_MEMORY_MIB if self.memory is None else parse_memory_mib(self.memory)
            )
        return LaunchOptions(
            name=self.name,
            cpus=cpus,
            memory_mib=memory_mib,
            disk_size=None
            if self.disk_size is None
            else parse_size(self.disk_size, what="disk size"),
            volumes=tuple(
                parse_size(v, default_unit="G", what="volume size") for v in self.volumes
            ),
            ssh_keys=tuple(key for given in self.ssh_keys for key in _public_keys(given)),
            user_data=read_data(self.user_data),
            network_config=read_data(self.network_config),
            vendor_data=read_data(self.vendor_data),
            meta_data=read_data(self.meta_data),
            kernel=Path(self.kernel) if self.kernel else None,
            initrd=Path(self.initrd) if self.initrd else None,
            cmdline=self.cmdline,
            forwards=tuple(
                f if isinstance(f, Forward) else parse_forward(f) for f in self.forwards
            ),
            nics=tuple(n if isinstance(n, TapNic) else parse_tap(n) for n in self.nics),
            networks=tuple(
                n if isinstance(n, NetworkNic) else parse_network(n) for n in self.networks
            ),
            published=tuple(
                p if isinstance(p, Forward) else parse_publish(p) for p in self.publish
            ),
            seed=self.seed,
            cpus_given=self.instance_type is not None or self.cpus is not None,
            memory_given=self.instance_type is not None or self.memory is not None,
            cold_if_needed=self.cold_if_needed,
        )


class LaunchFields(TypedDict, total=False):
    """LaunchRequest's fields as keyword arguments (`Corral.launch(image, **fields)`), so a
    type checker sees them; a test keeps the two lists equal."""

    name: Required[str]
    instance_type: str | None
    cpus: int | None
    memory: str | int | None
    disk_size: str | int | None
    volumes: Iterable[str | int]
    ssh_keys: Iterable[str | os.PathLike[str]]
    user_data: Data
    network_config: Data
    vendor_data: Data
    meta_data: Data
    kernel: str | os.PathLike[str] | None
    initrd: str | os.PathLike[str] | None
    cmdline: str | None
    forwards: Iterable[str | Forward]
    networks: Iterable[str | NetworkNic]
    publish: Iterable[str | Forward]
    seed: bool
    nics: Iterable[str | TapNic]
    cold_if_needed: bool


def parse_tap(text: str) -> TapNic:
    """`NAME[,mac=MAC][,mtu=N]`: a NIC on an existing host tap (a MAC is made up if none)."""
    name, *rest = text.split(",")
    values: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or key not in ("mac", "mtu") or key in values:
            raise InvalidInput(f"invalid tap {text!r}: expected NAME[,mac=MAC][,mtu=N]")
        values[key] = value
    mtu = values.get("mtu")
    if mtu is not None and not mtu.isdigit():
        raise InvalidInput(f"invalid tap {text!r}: mtu must be a number")
    mac = values.get("mac", "").lower() or random_mac()
    return TapNic(name, mac, int(mtu) if mtu is not None else None)


def random_mac() -> str:
    """A unicast MAC in QEMU's 52:54:00 range."""
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def check_tap_exists(name: str) -> None:
    """`name` has passed TapNic's pattern (no path, no NUL, <= 15 bytes). Asked through a
    socket of the calling thread's network namespace (not /sys, which shows the namespace sysfs
    was mounted in), so a launch inside `ip netns exec` or a setns'd thread sees its own."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise InvalidInput(
            f"no TAP device {name!r} on this host",
            hint="create it first, e.g. ip tuntap add dev NAME mode tap",
        ) from None


def parse_publish(text: str) -> Forward:
    """`[ADDR:]HOSTPORT:GUESTPORT[/udp]`, as a forward is written (ADDR 127.0.0.1 by default)."""
    try:
        return parse_forward(text)
    except InvalidInput as exc:
        raise InvalidInput(exc.message.replace("invalid forward", "invalid --publish", 1)) from None


def _public_keys(given: str | os.PathLike[str]) -> list[str]:
    """The key lines of a PublicKey, or of the public key file a path names."""
    if isinstance(given, PublicKey):
        return [str(given)]  # a plain str from here on (YAML, JSON)
    return read_public_keys(Path(given).expanduser())
