"""/jobs: what long operations are doing; /events: every state change as it happens, and
/events/recent: those kept (newest first)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from corral.api.deps import Authenticated, Plane
from corral.api.errors import ERRORS
from corral.api.schemas import EventRecordPublic, JobPublic

router = APIRouter(dependencies=[Authenticated], responses=ERRORS)


@router.get("/jobs/{job_id}", tags=["jobs"])
async def get_job(job_id: uuid.UUID, plane: Plane) -> JobPublic:
    return JobPublic.model_validate(await plane.jobs.get(job_id))


@router.get("/jobs", tags=["jobs"])
async def list_jobs(
    plane: Plane,
    vm_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[JobPublic]:
    """The newest jobs first."""
    jobs = await plane.jobs.list(vm_id=vm_id, limit=limit, offset=offset)
    return [JobPublic.model_validate(j) for j in jobs]


@router.get("/events/recent", tags=["events"])
async def recent_events(
    plane: Plane,
    kind: Literal["host", "vm", "job"] | None = None,
    id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[EventRecordPublic]:
    """The stored events, newest first: of one kind, about one host, VM or job (`id`), or all.
    Events are kept for 7 days, and at most the newest 200,000."""
    found = await plane.events.recent(kinds=[kind] if kind else [], object_id=id, limit=limit)
    return [EventRecordPublic.model_validate(e) for e in found]


@router.get(
    "/events",
    tags=["events"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def events(
    request: Request,
    plane: Plane,
    kind: Annotated[list[Literal["host", "vm", "job"]], Query(max_length=3)] = [],  # noqa: B006
) -> StreamingResponse:
    """Server-sent events, one per state change of a host, VM or job made from now on:
    `event:` is the kind, `data:` the JSON event. With several control-plane processes on one
    PostgreSQL database, each streams the changes all of them make."""
    subscription = plane.bus.subscribe(plane.settings.event_keepalive)
    wanted = set(kind)

    async def stream() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n: subscribed\n\n"
            async for item in subscription:
                if item is None:
                    yield ": keep-alive\n\n"
                    continue
                number, event = item
                if wanted and event.kind not in wanted:
                    continue
                yield f"id: {number}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
        finally:
            subscription.close()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
