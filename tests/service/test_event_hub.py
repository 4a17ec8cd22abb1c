"""The event hub: every open stream of a job is served by one database check an interval."""

from __future__ import annotations

import asyncio

import pytest

import api.event_hub as event_hub
from api.event_hub import EventHub
from core.service.db import session_scope
from core.service.events import add_event
from tests.service.helpers import make_job


def test_many_watchers_share_one_check_and_wake_on_a_new_event(db_url: str, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    job_id = make_job(db_url)
    checks: list[list[str]] = []
    real = event_hub.read_marks

    def counted(url: str, job_ids: list[str]):
        if url == db_url:  # not the hubs of servers other tests left behind in this process
            checks.append(job_ids)
        return real(url, job_ids)

    monkeypatch.setattr(event_hub, "read_marks", counted)
    hub = EventHub(db_url, interval=0.05)

    async def watcher() -> list[tuple[int, str] | None]:
        async with hub.watch(job_id):
            first = await hub.wait(job_id, None, timeout=5)  # the job's current mark
            again = await hub.wait(job_id, first, timeout=0.3)  # nothing moved: times out
            moved = await hub.wait(job_id, first, timeout=5)  # the event added below
            return [first, again, moved]

    async def scenario() -> list[list[tuple[int, str] | None]]:
        tasks = [asyncio.create_task(watcher()) for _ in range(40)]
        await asyncio.sleep(0.6)
        with session_scope(db_url) as db:
            add_event(db, job_id, "message", "hello")
        results = await asyncio.gather(*tasks)
        await asyncio.sleep(0.2)  # the hub's loop ends once no stream watches
        return results

    results = asyncio.run(scenario())
    with session_scope(db_url) as db:
        from sqlalchemy import func, select

        from core.service.models import JobEvent

        newest = db.scalar(select(func.max(JobEvent.id)).where(JobEvent.job_id == job_id))
    for first, again, moved in results:
        assert first is not None and again is None
        assert moved == (newest, first[1]) and moved[0] > first[0]
    # 40 streams over about 0.7 s at a 0.05 s interval: one check a tick for all of them, not one each
    assert all(ids == [job_id] for ids in checks)
    assert 3 <= len(checks) <= 30, len(checks)


def test_a_deleted_job_reads_as_deleted(sqlite_url: str) -> None:
    assert event_hub.read_marks(sqlite_url, ["job_missing"]) == {"job_missing": (0, "deleted")}


def test_streams_woken_together_share_one_read(sqlite_url: str) -> None:
    hub = EventHub(sqlite_url, interval=0.05)
    reads: list[object] = []

    async def read() -> list[int]:
        reads.append(1)
        await asyncio.sleep(0.05)  # in flight while the other streams ask
        return [len(reads)]

    async def failing() -> list[int]:
        reads.append(1)
        await asyncio.sleep(0.05)
        raise RuntimeError("database gone")

    async def scenario() -> tuple[list[list[int]], list[int], list[BaseException | list[int]]]:
        together = await asyncio.gather(*(hub.shared(("job", 0, None), read) for _ in range(30)))
        later = await hub.shared(("job", 0, None), read)  # the first read is done: a new one
        other = await asyncio.gather(hub.shared(("job", 5, None), failing),
                                     hub.shared(("job", 5, None), failing), return_exceptions=True)
        return together, later, other

    together, later, other = asyncio.run(scenario())
    assert together == [[1]] * 30 and later == [2]
    assert len(reads) == 3  # 30 streams, one read; one later read; one failing read for two streams
    assert [str(e) for e in other] == ["database gone"] * 2


def test_a_failing_database_check_is_said_once_and_the_streams_wake_once_it_is_back(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    job_id = make_job(sqlite_url)
    real = event_hub.read_marks
    failures = {"left": 5}

    def flaky(url: str, job_ids: list[str]):
        if url == sqlite_url and failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("database unreachable")
        return real(url, job_ids)

    monkeypatch.setattr(event_hub, "read_marks", flaky)
    hub = EventHub(sqlite_url, interval=0.02)

    async def watcher() -> tuple[int, str] | None:
        async with hub.watch(job_id):
            return await hub.wait(job_id, None, timeout=5)

    with caplog.at_level("WARNING", logger="api.events"):
        mark = asyncio.run(watcher())
    assert mark is not None and mark[1] == "queued" and failures["left"] == 0
    said = [r.getMessage() for r in caplog.records if r.name == "api.events"]
    # five failed ticks: one warning for the outage (naming the error), one for the recovery
    assert len(said) == 2, said
    assert "ConnectionError: database unreachable" in said[0] and "1 streams wait" in said[0]
    assert said[1].startswith("event streams: database back after")
