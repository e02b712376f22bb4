"""Jobs: long operations (node calls) that run after the request that asked for them returned.

A service records the job (pending) in the same transaction as the change that needs it, and
hands the runner its work once that transaction has committed. The runner marks it running
(a VM create records its job running at once: the runner starts it as soon as the create has
committed, so a separate transaction would only cost time), awaits the work, and marks it
completed or failed (with the error's message and the HTTP status of its kind) in one
transaction together with whatever the work's result changes (a VM's status, say). Jobs run in
the process that accepted the request (recorded as the job's process_id): if that process stops,
it marks them failed; if it dies, the others do (corral.control.liveness), or on SQLite it does
itself when it starts again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.orm import Session

from corral.control.events import emit
from corral.control.hosts import vm_event
from corral.db.models import Job, utcnow
from corral.db.repositories import JobRepository, VmRepository
from corral.errors import CorralError, NotFound

if TYPE_CHECKING:
    from corral.control.plane import ControlPlane

# Run in the transaction that marks the job running; what it returns is given to the work.
Prepare = Callable[[Session], Any]
# Applied in the transaction that finishes the job.
Finish = Callable[[Session], None]
Work = Callable[[Any], Awaitable[Finish | None]]
OnError = Callable[[CorralError], Awaitable[Finish | None]]

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}

    def spawn(
        self,
        job_id: uuid.UUID,
        work: Work,
        on_error: OnError | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        """Run `work` for the recorded (pending) job; call from the event loop."""

        async def begin() -> Any:
            return await self.plane.write(_start, job_id, prepare)

        self._spawn(job_id, self._run(job_id, begin, work, on_error))

    def spawn_started(
        self, job_id: uuid.UUID, prepared: Any, work: Work, on_error: OnError | None = None
    ) -> None:
        """Run `work` for a job recorded as running already, in the transaction that asked
        for it (which also prepared its input): one transaction fewer for the hot path."""

        async def begin() -> Any:
            return prepared

        self._spawn(job_id, self._run(job_id, begin, work, on_error))

    def _spawn(self, job_id: uuid.UUID, run: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(run)
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def wait(self, job_id: uuid.UUID, timeout: float | None = None) -> None:
        """Wait until a job this process runs has finished (returns at once for others)."""
        task = self._tasks.get(job_id)
        if task is not None:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel what still runs; those jobs are marked failed."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self,
        job_id: uuid.UUID,
        begin: Callable[[], Awaitable[Any]],
        work: Work,
        on_error: OnError | None,
    ) -> None:
        plane = self.plane
        began = time.monotonic()

        async def end(status: str, failure: Failure | None, finish: Finish | None) -> None:
            kind = await plane.write(_end, job_id, status, failure, finish)
            if kind is not None:  # else someone else finished it (abandoned meanwhile)
                plane.metrics.job_finished(kind, status, time.monotonic() - began)

        try:
            try:
                prepared = await begin()
                finish = await work(prepared)
            except CorralError as exc:
                finish = await _after_error(on_error, exc)
                await end("failed", Failure(exc.message, exc.http_status), finish)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: record it rather than lose it
                log.exception("job %s failed unexpectedly", job_id)
                await end("failed", Failure(f"internal error: {exc!r}", 500), None)
            else:
                await end("completed", None, finish)
        except asyncio.CancelledError:
            failure = Failure("the control plane stopped before the job finished", 503)
            await asyncio.shield(end("failed", failure, None))
        except Exception:
            log.exception("could not record the end of job %s", job_id)


async def _after_error(on_error: OnError | None, exc: CorralError) -> Finish | None:
    if on_error is None:
        return None
    try:
        return await on_error(exc)
    except Exception:
        log.exception("recovering from a failed job failed")
        return None


def _start(session: Session, job_id: uuid.UUID, prepare: Prepare | None) -> Any:
    moved = JobRepository(session).running(job_id, utcnow())
    if moved is not None:
        kind, vm_id = moved
        emit(session, "job", "updated", job_id, "running", {"kind": kind, "vm_id": _str(vm_id)})
    return None if prepare is None else prepare(session)


class Failure(NamedTuple):
    """Why a job failed: the message, and the HTTP status of its kind (4xx: the request's own
    mistake, e.g. 404 for an image its host does not have; 5xx: a failure)."""

    message: str
    status: int


def _end(
    session: Session,
    job_id: uuid.UUID,
    status: str,
    failure: Failure | None,
    finish: Finish | None,
) -> str | None:
    """Finish the job; its kind (None if it was finished already)."""
    if finish is not None:
        finish(session)
    error, code = failure if failure is not None else (None, None)
    moved = JobRepository(session).finished(job_id, status, error, code, utcnow())
    if moved is None:
        return None
    kind, vm_id = moved
    data = {"kind": kind, "vm_id": _str(vm_id), "error": error}
    emit(session, "job", "updated", job_id, status, data)
    return kind


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


class JobService:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def get(self, job_id: uuid.UUID) -> Job:
        job = await self.plane.read(lambda s: JobRepository(s).get(job_id))
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    async def list(self, *, vm_id: uuid.UUID | None, limit: int, offset: int) -> list[Job]:
        def query(session: Session) -> list[Job]:
            return list(JobRepository(session).recent(vm_id=vm_id, limit=limit, offset=offset))

        return await self.plane.read(query)

    def fail_unfinished(self, session: Session, reason: str) -> int:
        """Mark every pending or running job failed (an embedded server that restarted)."""
        return abandon(session, list(JobRepository(session).unfinished()), reason)


def abandon(session: Session, jobs: list[Job], reason: str) -> int:
    """Fail jobs no process will finish; a VM whose create was under way becomes `unknown`
    (the node may or may not have made it: the health checks reconcile it). How many."""
    for job in jobs:
        job.status, job.error, job.finished_at = "failed", reason, utcnow()
        job.error_status = 503
        data = {"kind": job.kind, "vm_id": _str(job.vm_id), "error": reason}
        emit(session, "job", "updated", job.id, "failed", data)
        if job.kind == "vm.create" and job.vm_id is not None:
            vm = VmRepository(session).get(job.vm_id, lock=True)
            if vm is not None and vm.status == "pending":
                vm.status, vm.status_reason = "unknown", f"its create was not finished: {reason}"
                vm_event(session, vm)
    session.flush()
    return len(jobs)
