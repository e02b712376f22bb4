"""Finding, saving, locking and cleaning up instance directories."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator

from corral.errors import Conflict, CorralError, NotFound
from corral.fsutil import locked, write_atomic
from corral.instance import networking
from corral.instance.record import InstanceRecord, check_instance_name
from corral.instance.state import observe
from corral.layout import Home, InstanceFiles
from corral.machine.ports import PortClaims, wait_port_free
from corral.machine.vm import Vm
from corral.records import RecordError


def load(files: InstanceFiles) -> InstanceRecord:
    try:
        return InstanceRecord.from_json(files.record.read_bytes())
    except FileNotFoundError:
        raise NotFound(f"no instance named {files.dir.name!r}", hint="see: corral ls") from None
    except RecordError as exc:
        raise CorralError(f"{files.record} is damaged: {exc}") from exc


def load_named(home: Home, name: str) -> tuple[InstanceFiles, InstanceRecord]:
    check_instance_name(name)
    files = home.instance(name)
    return files, load(files)


def save(files: InstanceFiles, record: InstanceRecord) -> None:
    write_atomic(files.record, record.to_json(), mode=0o600)


def names(home: Home) -> list[str]:
    if not home.instances.is_dir():
        return []
    return sorted(p.name for p in home.instances.iterdir() if p.is_dir())


def records(home: Home) -> list[tuple[InstanceFiles, InstanceRecord]]:
    out = []
    for name in names(home):
        files = home.instance(name)
        with contextlib.suppress(NotFound, CorralError):
            out.append((files, load(files)))
    return out


@contextlib.contextmanager
def instance_lock(files: InstanceFiles, *, blocking: bool = True) -> Iterator[None]:
    """Serialise lifecycle operations on one instance."""
    if not files.dir.is_dir():
        raise NotFound(f"no instance named {files.dir.name!r}", hint="see: corral ls")
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Conflict(f"instance {files.dir.name!r} is busy with another command") from None
        yield
    finally:
        os.close(fd)


def ports(record: InstanceRecord) -> list[int]:
    """The host ports the instance holds for as long as it exists (running or not): its ssh
    forward (none on a managed network), its forwards and the ports published to it."""
    ssh = [record.ssh_port] if record.ssh_port else []
    return [*ssh, *(f.host_port for f in (*record.forwards, *record.published))]


def release_ports(record: InstanceRecord, timeout: float = 3.0) -> None:
    """Wait until a QEMU that has just been killed has let go of the instance's host ports.

    A killed multi-threaded process is reported dead a moment before its sockets are closed.
    """
    if record.ssh_port:
        wait_port_free(record.ssh_port, timeout=timeout)
    for fwd in record.forwards:
        wait_port_free(fwd.host_port, fwd.host_addr, fwd.protocol, timeout=timeout)


def destroy_vm(files: InstanceFiles) -> None:
    """End the instance's QEMU if it still runs, and wait for its ports to be free."""
    vm = Vm.attach(files)
    if vm is not None:
        vm.kill()
        with contextlib.suppress(CorralError):
            release_ports(load(files))


def destroy(files: InstanceFiles) -> None:
    """End the instance's QEMU if it still runs and remove its directory (which frees the
    ports it claimed)."""
    destroy_vm(files)
    shutil.rmtree(files.dir, ignore_errors=True)


def claim_recorded_ports(home: Home) -> None:
    """Claim in the host-wide registry the ports of records made before it existed; changes
    nothing else (for commands, like `corral build`, that must not clean up instances)."""
    if not home.instances.is_dir():
        return
    with locked(home.ports_lock):
        claims = PortClaims(home)
        held = claims.held()
        for files, record in records(home):
            claims.claim(files.dir, [p for p in ports(record) if p not in held])


def reap_stale(home: Home) -> list[str]:
    """Clean up launches whose launcher died: no orphan QEMU, no leaked port, no half directory.

    Runs under the instances lock, which every launch holds while it creates its directory and
    first record, so a directory without a record here is one a dead launcher left. Ports that
    records made before the host-wide port registry hold are claimed there on the way. Then
    the NICs on managed networks of VMs that no longer exist go (networking.reconcile). Where
    no instance was ever made (no instances/ directory, which a launch makes before it attaches
    any NIC) no NIC can be an instance's: nothing is decided about them.
    """
    if not home.instances.is_dir():
        return []
    reaped = []
    with locked(home.ports_lock):
        claims = PortClaims(home)
        held = claims.held()
        for name in names(home):
            files = home.instance(name)
            if not files.record.exists():
                shutil.rmtree(files.dir, ignore_errors=True)
                reaped.append(name)
                continue
            with contextlib.suppress(CorralError):
                record = load(files)
                if observe(record, files).stale:
                    destroy(files)
                    reaped.append(name)
                else:
                    claims.claim(files.dir, [p for p in ports(record) if p not in held])
    networking.reconcile(home)
    return reaped
