"""GET /jobs/{id}/events: the job's event log, paged or as a server-sent-events stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api.deps import DbDep, KeyDep
from api.event_hub import EventHub, Mark
from api.metrics import EVENT_STREAMS
from api.routers.jobs import ERRORS, owned_job
from api.schemas import EventList, event_object
from core.service.db import get_read_sessionmaker, read_once_more
from core.service.models import TERMINAL, Job, JobEvent

router = APIRouter(prefix="/jobs", tags=["events"])
KEEPALIVE_SECONDS = 15.0


def _page(session_factory, job_id: str, after: int, limit: int) -> tuple[list[JobEvent], bool, str]:
    def read() -> tuple[list[JobEvent], bool, str]:
        with session_factory() as db:  # autocommit: two statements, no transaction round trips
            rows = db.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
                              .order_by(JobEvent.id).limit(limit + 1)).all()
            status = db.scalar(select(Job.status).where(Job.id == job_id)) or "deleted"
            return list(rows[:limit]), len(rows) > limit, status

    return read_once_more(read)


@router.get("/{job_id}/events", response_model=EventList,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "JSON page, or an SSE stream with stream=true"}, **ERRORS})
async def list_events(
    job_id: str, request: Request, db: DbDep, key: KeyDep,
    after: Annotated[int, Query(ge=0, description="id of the last event already seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    stream: Annotated[bool, Query(description="server-sent events until the job is terminal")] = False,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID")] = None,
):
    """Oldest first. With `stream=true` every event is sent as `event: job.event` with `id:` set (so a
    reconnecting client resumes via Last-Event-ID); the stream ends with `event: done` /
    `data: [DONE]` once the job is terminal and every event was sent."""
    await run_in_threadpool(owned_job, db, key, job_id)
    await run_in_threadpool(db.close)  # a stream lives long: it must not hold a pooled connection meanwhile
    factory = get_read_sessionmaker(request.app.state.settings.database_url)
    hub: EventHub = request.app.state.event_hub
    if not stream:
        rows, has_more, _ = await run_in_threadpool(_page, factory, job_id, after, limit)
        data = [event_object(e) for e in rows]
        return EventList(data=data, has_more=has_more, first_id=data[0].id if data else None,
                         last_id=data[-1].id if data else None)
    start = max(after, last_event_id or 0)
    poll = request.app.state.settings.sse_poll_seconds
    return StreamingResponse(_sse(request, factory, hub, job_id, start, poll), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _encoded(rows: list[JobEvent]) -> str:
    return "".join(f"id: {e.id}\nevent: job.event\ndata: {event_object(e).model_dump_json()}\n\n" for e in rows)


async def _sse(request: Request, factory, hub: EventHub, job_id: str, cursor: int, poll: float
               ) -> AsyncIterator[str]:
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    seen: Mark | None = None

    async def page(after: int) -> tuple[str, int, bool, str]:
        rows, has_more, status = await run_in_threadpool(_page, factory, job_id, after, 500)
        return _encoded(rows), rows[-1].id if rows else after, has_more, status

    EVENT_STREAMS.inc()
    try:
        async with hub.watch(job_id):
            while True:
                # streams of this job woken by the same mark at the same cursor share one read
                text, cursor, has_more, status = await hub.shared((job_id, cursor, seen), partial(page, cursor))
                if text:
                    yield text
                    last_sent = time.monotonic()
                elif status in TERMINAL or status == "deleted":
                    yield "event: done\ndata: [DONE]\n\n"
                    return
                if has_more or status in TERMINAL or status == "deleted":
                    continue  # read on without waiting: the hub's mark will not move again for a finished job
                # No database read until the hub sees the job move; meanwhile notice a gone client and
                # keep the connection alive.
                while (mark := await hub.wait(job_id, seen, poll)) is None:
                    if await request.is_disconnected():
                        return
                    if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                        yield ": keep-alive\n\n"
                        last_sent = time.monotonic()
                seen = mark
    finally:
        EVENT_STREAMS.dec()
