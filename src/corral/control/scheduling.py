"""Where a VM goes: an `up` host with room for it, reserved in the transaction that records it.

Room is the host's vCPUs and memory after the overcommit ratios, less what its VMs that are not
shut down reserve. On PostgreSQL the candidate host row is locked with FOR UPDATE SKIP LOCKED
(concurrent creates spread over hosts instead of queueing on one), falling back to a waiting
FOR UPDATE when every candidate is locked, so a full answer ("no room") is only given after
looking at every host; on SQLite the write transaction (BEGIN IMMEDIATE) makes creates one at
a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from corral.control.settings import Settings
from corral.control.types import MIB
from corral.db.models import Host, Vm
from corral.db.repositories import HostRepository, NetworkRepository, VmRepository
from corral.errors import Conflict, InvalidInput


def schedule(
    session: Session,
    settings: Settings,
    postgresql: bool,
    name: str,
    vcpus: int,
    memory: int,
    networks: Sequence[str] = (),
) -> Row[Any]:
    """Reserve room for the VM on a host (one that has every network in `networks`): the
    host's (id, name, address, port, token).

    On PostgreSQL hosts other creates hold are skipped; only if that finds none are all `up`
    hosts locked (waiting for those creates), so "no room" means no room."""
    hosts = HostRepository(session)
    cpu_ratio, memory_ratio = settings.cpu_overcommit, settings.memory_overcommit
    among = hosts_with_networks(session, networks) if networks else None
    found = hosts.take(
        name=name,
        vcpus=vcpus,
        memory=memory,
        cpu_ratio=cpu_ratio,
        memory_ratio=memory_ratio,
        skip_locked=postgresql,
        among=among,
    )
    if found is not None:
        return found
    if VmRepository(session).name_taken(name):
        raise Conflict(f"a VM named {name!r} already exists")
    if postgresql:
        found = hosts.pick_waiting(
            vcpus=vcpus,
            memory=memory,
            cpu_ratio=cpu_ratio,
            memory_ratio=memory_ratio,
            among=among,
        )
        if found is not None:
            hosts.reserve(found.id, vcpus, memory)
            return found
    up = [h.id for h in hosts.with_status("up")]
    if among is not None:
        up = [h for h in up if h in among]
    where = (
        f"with network{'s' if len(networks) > 1 else ''} {', '.join(networks)} " if networks else ""
    )
    raise InvalidInput(
        f"no up host {where}with enough free capacity for {vcpus} vCPUs and {_gib(memory)} "
        f"({len(up)} {'such ' if networks else ''}host{'s' if len(up) != 1 else ''} up)",
        hint="add or init a host, delete or stop VMs, or raise the overcommit ratios",
    )


def hosts_with_networks(session: Session, names: Sequence[str]) -> list[Any]:
    """The hosts that have every one of these networks; InvalidInput naming one no host has."""
    found = NetworkRepository(session).hosts_with(names)
    among: set[Any] | None = None
    for name in names:
        if name not in found:
            raise InvalidInput(
                f"no host has a network named {name!r}",
                hint="create it first (POST /networks), on the hosts the VM may run on",
            )
        among = found[name] if among is None else among & found[name]
    if not among:
        raise InvalidInput(f"no host has all of the networks {', '.join(names)}")
    return sorted(among)


def check_room(settings: Settings, host: Host, vm: Vm) -> None:
    """A VM that was shut down gave its room back: is there room to start it again?"""
    free_cpu = host.cpus * settings.cpu_overcommit - host.used_vcpus
    free_memory = host.memory * settings.memory_overcommit - host.used_memory
    if free_cpu < vm.boot_vcpus or free_memory < vm.memory_size:
        raise InvalidInput(
            f"host {host.name!r} has no room to start VM {vm.name!r} again "
            f"({vm.boot_vcpus} vCPUs, {_gib(vm.memory_size)})",
            hint="stop or delete other VMs on that host first",
        )


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.3g} GiB" if size >= 1 << 30 else f"{size // MIB} MiB"
