"""aleph-vm's supervisor endpoints: allocations (desired running set), stop, console lines.

`POST /control/allocations` is authorised by the X-Auth-Signature header: its sha256 must equal
the configured allocation token hash (compared in constant time). The VMs it lists (by id or
name) should run: they are started (or resumed) and recorded as allocated; VMs allocated by an
earlier call but not listed any more are stopped and forgotten. The answer says which were
started, which stopped, and which failed and why, once their jobs have finished (or the
allocation timeout has passed).

An item hash that is not yet a VM is made into one from its aleph instance message (see
corral.control.aleph), on a host with room, and started; later calls, stop and logs find it by
its hash again.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy.orm import Session

from corral.context import Context
from corral.control import aleph
from corral.control.tokens import sha256_hex
from corral.control.types import AllocationRequest, AllocationResult, VmAction
from corral.db.models import Allocation, Job, Vm
from corral.db.repositories import AllocationRepository, JobRepository, VmRepository
from corral.errors import CorralError, InvalidInput, NotFound

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane


class AllocationService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def authorised(self, signature: str | None) -> bool:
        expected = self.plane.settings.allocation_token_hash
        if not expected or signature is None:
            return False
        return hmac.compare_digest(sha256_hex(signature), expected)

    async def allocate(self, request: AllocationRequest) -> AllocationResult:
        persistent = set(request.persistent_vms)
        refs = list(dict.fromkeys([*request.persistent_vms, *request.instances]))
        failed: dict[str, str] = {}
        notes: dict[str, list[str]] = {}
        to_make: list[str] = []  # item hashes with a message and no VM yet

        def record(
            session: Session,
        ) -> tuple[dict[str, tuple[uuid.UUID, str]], list[tuple[uuid.UUID, str, str]]]:
            vms = VmRepository(session)
            allocations = AllocationRepository(session)
            wanted: dict[str, tuple[uuid.UUID, str]] = {}
            for ref in refs:
                vm = _find(vms, ref)
                if vm is None and self._message_path(ref) is not None:
                    to_make.append(ref)
                elif vm is None:
                    failed[ref] = "no VM with this id or name"
                else:
                    wanted[ref] = (vm.id, vm.status)
            before = allocations.vm_ids()
            for ref, (vm_id, _) in wanted.items():
                if vm_id not in before:
                    allocations.add(Allocation(vm_id=vm_id, persistent=ref in persistent))
            keep = {vm_id for vm_id, _ in wanted.values()}
            gone = [vm_id for vm_id in before if vm_id not in keep]
            allocations.remove(gone)
            unlisted = []
            for vm_id in gone:
                vm = vms.get(vm_id)
                if vm is not None:
                    unlisted.append((vm.id, vm.name, vm.status))
            return wanted, unlisted

        wanted, unlisted = await self.plane.write(record)
        started: list[str] = []
        stopped: list[str] = []
        jobs: list[tuple[str, Job, list[str]]] = []
        for ref in to_make:
            try:
                job = await self._make(ref, ref in persistent, notes)
            except (CorralError, ValidationError) as exc:
                failed[ref] = _why(exc)
            else:
                jobs.append((ref, job, started))
        for ref, (vm_id, status) in wanted.items():
            if status == "running":
                started.append(ref)
                continue
            await self._act(
                vm_id, "resume" if status == "paused" else "start", ref, started, jobs, failed
            )
        for vm_id, name, status in unlisted:
            if status in ("running", "paused", "unknown"):
                await self._act(vm_id, "stop", name, stopped, jobs, failed)
            else:
                stopped.append(name)

        timeout = self.plane.settings.allocation_timeout
        waits = [self.plane.runner.wait(job.id, timeout) for _, job, _ in jobs]
        await asyncio.gather(*waits, return_exceptions=True)
        ids = [job.id for _, job, _ in jobs]
        finished = await self.plane.read(lambda s: {i: JobRepository(s).get(i) for i in ids})
        for ref, job, done in jobs:
            now = finished.get(job.id)
            if now is not None and now.status == "completed":
                done.append(ref)
            elif now is not None and now.status == "failed":
                failed[ref] = now.error or "failed"
            else:
                failed[ref] = f"still under way after {timeout:.0f}s (job {job.id})"
        return AllocationResult(
            success=not failed, started=started, stopped=stopped, failed=failed, notes=notes
        )

    # --- aleph instance messages -----------------------------------------------------------

    def _message_path(self, ref: str) -> Path | None:
        settings = self.plane.settings
        return aleph.message_path(
            ref, settings.aleph_messages_dir, settings.aleph_fake_instance_message
        )

    async def _make(self, item_hash: str, persistent: bool, notes: dict[str, list[str]]) -> Job:
        """Create (and start) the VM of an item hash from its message; its create job."""
        path = self._message_path(item_hash)
        assert path is not None
        message = await asyncio.to_thread(aleph.read_message, path, item_hash)
        data, unhonoured = aleph.vm_create(
            item_hash,
            message,
            await self._rootfs_image(message.content.rootfs.parent.ref),
            self.plane.settings.default_network,
        )
        if unhonoured:
            notes[item_hash] = unhonoured
        vm = await self.plane.vms.create(data)

        def allocate(session: Session) -> Job:
            AllocationRepository(session).add(Allocation(vm_id=vm["id"], persistent=persistent))
            job = JobRepository(session).get(vm["job_id"])
            assert job is not None
            return job

        return await self.plane.write(allocate)

    async def _rootfs_image(self, ref: str) -> str:
        settings = self.plane.settings
        base = settings.aleph_fake_instance_base
        if base is not None and base.startswith("/"):
            base = await asyncio.to_thread(self._import_base, Path(base))
        return aleph.rootfs_image(ref, settings.aleph_images, base)

    def _import_base(self, path: Path) -> str:
        """The embedded server's own store takes a fake base given as a disk image file (as
        aleph-vm's ALEPH_VM_FAKE_INSTANCE_BASE is), once per file version."""
        settings = self.plane.settings
        if not settings.local_node or settings.config is None:
            raise InvalidInput(
                f"aleph_fake_instance_base {path} is a file: only the embedded server, its "
                "own host, can use one; give a corral image name"
            )
        try:
            st = path.stat()
        except OSError as exc:
            raise NotFound(f"aleph fake instance base {path}: {exc.strerror}") from exc
        key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
        name = "aleph-base-" + sha256_hex(key)[:16]
        store = Context(settings.config).store
        with _IMPORT_LOCK:
            if not store.exists(name):
                store.import_image(path, name, origin=f"aleph-fake-base:{path}", label=str(path))
        return name

    async def _act(
        self,
        vm_id: uuid.UUID,
        action: VmAction,
        ref: str,
        done: list[str],
        jobs: list[tuple[str, Job, list[str]]],
        failed: dict[str, str],
    ) -> None:
        try:
            job = await self.plane.vms.act(vm_id, action)
        except CorralError as exc:
            failed[ref] = exc.message
        else:
            jobs.append((ref, job, done))

    async def by_ref(self, ref: str) -> Vm:
        """A VM by id, name or aleph item hash."""
        vm = await self.plane.read(lambda s: _find(VmRepository(s), ref))
        if vm is None:
            raise NotFound(f"no VM with id, name or item hash {ref!r}")
        return vm

    async def stop(self, ref: str) -> Job:
        """Stop a VM (by id, name or item hash) and wait for the job, up to the allocation
        timeout."""
        vm = await self.by_ref(ref)
        job = await self.plane.vms.act(vm.id, "stop")
        try:
            await self.plane.runner.wait(job.id, self.plane.settings.allocation_timeout)
        except TimeoutError:
            pass
        return await self.plane.jobs.get(job.id)

    async def log_lines(self, ref: str) -> AsyncIterator[str]:
        """New console output of a VM, line by line (a last partial line is sent at the end)."""
        vm = await self.by_ref(ref)
        stream = await self.plane.vms.console_stream(vm.id)
        return _lines(stream)


_IMPORT_LOCK = threading.Lock()


def _find(vms: VmRepository, ref: str) -> Vm | None:
    """By id or name, else the VM made from an item hash's message."""
    vm = vms.by_ref(ref)
    if vm is None and aleph.is_item_hash(ref):
        vm = vms.by_name(aleph.vm_name(ref))
    return vm


def _why(exc: CorralError | ValidationError) -> str:
    if isinstance(exc, CorralError):
        return exc.message
    first = exc.errors()[0]
    return str(first.get("ctx", {}).get("error") or first["msg"]).removeprefix("Value error, ")


async def _lines(stream: AsyncIterator[bytes]) -> AsyncIterator[str]:
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace") + "\n"
    if pending:
        yield pending.decode(errors="replace")
