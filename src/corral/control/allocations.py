"""aleph-vm's supervisor endpoints: allocations (desired running set), stop, console lines.

`POST /control/allocations` is authorised by the X-Auth-Signature header: its sha256 must equal
the configured allocation token hash (compared in constant time). The VMs it lists (by id or
name) should run: they are started (or resumed) and recorded as allocated; VMs allocated by an
earlier call but not listed any more are stopped and forgotten. The answer says which were
started, which stopped, and which failed and why, once their jobs have finished (or the
allocation timeout has passed).
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from corral.control.tokens import sha256_hex
from corral.control.types import AllocationRequest, AllocationResult, VmAction
from corral.db.models import Allocation, Job
from corral.db.repositories import AllocationRepository, JobRepository, VmRepository
from corral.errors import CorralError

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

        def record(
            session: Session,
        ) -> tuple[dict[str, tuple[uuid.UUID, str]], list[tuple[uuid.UUID, str, str]]]:
            vms = VmRepository(session)
            allocations = AllocationRepository(session)
            wanted: dict[str, tuple[uuid.UUID, str]] = {}
            for ref in refs:
                vm = vms.by_ref(ref)
                if vm is None:
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
        return AllocationResult(success=not failed, started=started, stopped=stopped, failed=failed)

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

    async def stop(self, ref: str) -> Job:
        """Stop a VM (by id or name) and wait for the job, up to the allocation timeout."""
        vm = await self.plane.vms.by_ref(ref)
        job = await self.plane.vms.act(vm.id, "stop")
        try:
            await self.plane.runner.wait(job.id, self.plane.settings.allocation_timeout)
        except TimeoutError:
            pass
        return await self.plane.jobs.get(job.id)

    async def log_lines(self, ref: str) -> AsyncIterator[str]:
        """New console output of a VM, line by line (a last partial line is sent at the end)."""
        vm = await self.plane.vms.by_ref(ref)
        stream = await self.plane.vms.console_stream(vm.id)
        return _lines(stream)


async def _lines(stream: AsyncIterator[bytes]) -> AsyncIterator[str]:
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace") + "\n"
    if pending:
        yield pending.decode(errors="replace")
