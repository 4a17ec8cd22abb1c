"""One database check for every open event stream of this API process.

Each stream used to ask the database for new events every `sse_poll_seconds`, so N open streams cost N
queries an interval. The hub asks once an interval for the newest event id and the status of every job
some stream watches, and wakes only the streams whose job moved; a stream reads its new rows only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select

from core.service.db import get_read_sessionmaker, read_once_more
from core.service.models import Job, JobEvent

log = logging.getLogger("api.events")
T = TypeVar("T")
Mark = tuple[int, str]  # (newest event id, job status); status "deleted" once the job row is gone


def read_marks(database_url: str, job_ids: list[str]) -> dict[str, Mark]:
    """Newest event id and status of each job, in one round trip."""
    def read() -> list[Any]:
        with get_read_sessionmaker(database_url)() as db:
            newest = (select(func.max(JobEvent.id)).where(JobEvent.job_id == Job.id)
                      .correlate(Job).scalar_subquery())
            return list(db.execute(select(Job.id, Job.status, newest).where(Job.id.in_(job_ids))).all())

    rows = read_once_more(read)
    marks = {job_id: (last or 0, status) for job_id, status, last in rows}
    return {job_id: marks.get(job_id, (0, "deleted")) for job_id in job_ids}


class _LoopHub:
    """The hub's state on one event loop (asyncio primitives belong to the loop that made them)."""

    def __init__(self) -> None:
        self.watchers: dict[str, int] = {}
        self.marks: dict[str, Mark] = {}
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        self.reads: dict[Hashable, asyncio.Future[Any]] = {}


class EventHub:
    def __init__(self, database_url: str, interval: float) -> None:
        self.database_url = database_url
        self.interval = interval
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopHub] = weakref.WeakKeyDictionary()

    def _hub(self) -> _LoopHub:
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            self._loops[loop] = _LoopHub()
        return self._loops[loop]

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[None]:
        hub = self._hub()
        hub.watchers[job_id] = hub.watchers.get(job_id, 0) + 1
        if hub.task is None or hub.task.done():
            hub.task = asyncio.create_task(self._run(hub))
        try:
            yield
        finally:
            hub.watchers[job_id] -= 1
            if not hub.watchers[job_id]:
                del hub.watchers[job_id]
                hub.marks.pop(job_id, None)

    async def wait(self, job_id: str, seen: Mark | None, timeout: float) -> Mark | None:
        """The job's mark once it differs from `seen` (the mark the caller last acted on), or None when
        `timeout` passes first. Returning only on a new mark keeps a stream from re-reading its rows
        between two checks of the hub."""
        hub = self._hub()

        def moved() -> bool:
            mark = hub.marks.get(job_id)
            return mark is not None and mark != seen

        async with hub.changed:
            try:
                await asyncio.wait_for(hub.changed.wait_for(moved), timeout)
            except asyncio.TimeoutError:
                return None
            return hub.marks[job_id]

    async def shared(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`, run once for every caller that asks with the same key while it is in flight. Streams
        of one job wake together when it moves and want the same page: one read serves them all instead
        of a burst of identical reads queued ahead of other requests. A key must name everything the
        answer depends on (job, cursor, the mark that woke the caller)."""
        hub = self._hub()
        future = hub.reads.get(key)
        if future is None:
            future = asyncio.ensure_future(read())
            hub.reads[key] = future
            future.add_done_callback(lambda _done: hub.reads.pop(key, None))
        return await asyncio.shield(future)

    async def _run(self, hub: _LoopHub) -> None:
        failing_since: float | None = None  # a database outage: streams keep waiting, retried each tick
        while hub.watchers:
            job_ids = list(hub.watchers)
            try:
                marks = await run_in_threadpool(read_marks, self.database_url, job_ids)
            except Exception as exc:  # any driver error; said once per outage, not once per tick
                if failing_since is None:
                    failing_since = asyncio.get_running_loop().time()
                    log.warning("event streams: database check failed (%s: %s); %d streams wait, retrying "
                                "every %.1f s", type(exc).__name__, exc, sum(hub.watchers.values()), self.interval)
            else:
                if failing_since is not None:
                    log.warning("event streams: database back after %.1f s",
                                asyncio.get_running_loop().time() - failing_since)
                    failing_since = None
                fresh = {j: m for j, m in marks.items() if j in hub.watchers and hub.marks.get(j) != m}
                if fresh:
                    async with hub.changed:
                        hub.marks.update(fresh)
                        hub.changed.notify_all()
            await asyncio.sleep(self.interval)
