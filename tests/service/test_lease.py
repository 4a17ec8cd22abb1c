"""Lease compare-and-set and the reaper sweep, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from core.service import lease
from core.service.db import session_scope
from core.service.models import (
    CANCELLED,
    CANCELLING,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    utcnow,
)
from core.service.reaper import sweep
from core.service.settings import Settings
from tests.service.helpers import get_job, make_job

pytestmark = pytest.mark.service  # PostgreSQL half


def settings_for(url: str, tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path, database_url=url, **extra)


def test_only_one_worker_gets_the_lease(db_url: str) -> None:
    job_id = make_job(db_url)
    with session_scope(db_url) as db:
        assert lease.acquire(db, job_id, "a", 30)
    with session_scope(db_url) as db:
        assert not lease.acquire(db, job_id, "b", 30)  # a duplicate delivery exits
        assert lease.renew(db, job_id, "a", 30)
        assert not lease.renew(db, job_id, "b", 30)
    job = get_job(db_url, job_id)
    assert job.status == RUNNING and job.lease_owner == "a" and job.attempts == 1 and job.started_at


def test_expired_lease_is_taken_over_and_the_old_owner_is_locked_out(db_url: str) -> None:
    job_id = make_job(db_url)
    with session_scope(db_url) as db:
        assert lease.acquire(db, job_id, "a", 30)
    later = utcnow() + timedelta(seconds=31)
    with session_scope(db_url) as db:
        assert lease.acquire(db, job_id, "b", 30, now=later)
    with session_scope(db_url) as db:
        assert not lease.renew(db, job_id, "a", 30)
        assert not lease.finish(db, job_id, "a", SUCCEEDED)  # a stale owner cannot publish
        assert lease.finish(db, job_id, "b", SUCCEEDED, only_from=(RUNNING,))
    job = get_job(db_url, job_id)
    assert job.status == SUCCEEDED and job.lease_owner is None and job.attempts == 2


def test_concurrent_acquire_has_exactly_one_winner(db_url: str) -> None:
    job_id = make_job(db_url)
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def worker(name: str) -> None:
        barrier.wait()
        with session_scope(db_url) as db:
            if lease.acquire(db, job_id, name, 30):
                wins.append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert get_job(db_url, job_id).lease_owner == wins[0]


def test_cancel_queued_is_immediate_and_running_is_cooperative(db_url: str) -> None:
    queued = make_job(db_url)
    running = make_job(db_url)
    with session_scope(db_url) as db:
        assert lease.acquire(db, running, "a", 30)
        assert lease.cancel(db, queued)
        assert lease.cancel(db, running)
    assert get_job(db_url, queued).status == CANCELLED
    job = get_job(db_url, running)
    assert job.status == CANCELLING and job.cancel_requested_at is not None
    with session_scope(db_url) as db:
        assert not lease.acquire(db, queued, "b", 30)  # its queued message is dropped
        assert not lease.set_status(db, running, "a", "evaluating")  # never overrides the cancel
        assert not lease.finish(db, running, "a", SUCCEEDED, only_from=(RUNNING, "evaluating"))
        assert lease.finish(db, running, "a", CANCELLED)


def test_sweep_requeues_expired_fails_after_max_attempts_and_ends_dead_cancels(db_url: str,
                                                                               tmp_path: Path) -> None:
    settings = settings_for(db_url, tmp_path, max_attempts=2, dispatch_grace_seconds=5,
                            redispatch_after_seconds=600)
    past = utcnow() - timedelta(seconds=1)
    expired = make_job(db_url, RUNNING, lease_owner="dead", lease_expires_at=past, attempts=1)
    hopeless = make_job(db_url, RUNNING, lease_owner="dead", lease_expires_at=past, attempts=2)
    cancelling = make_job(db_url, CANCELLING, lease_owner="dead", lease_expires_at=past, attempts=1)
    alive = make_job(db_url, RUNNING, lease_owner="alive", lease_expires_at=utcnow() + timedelta(seconds=60))
    unsent = make_job(db_url, QUEUED, created_at=utcnow() - timedelta(seconds=30))
    fresh = make_job(db_url, QUEUED)  # the API is sending it right now
    sent = make_job(db_url, QUEUED, dispatched_at=utcnow())
    lost = make_job(db_url, QUEUED, dispatched_at=utcnow() - timedelta(seconds=601))
    stuck = make_job(db_url, "validating", created_at=utcnow() - timedelta(hours=2))
    validating = make_job(db_url, "validating")

    with session_scope(db_url) as db:
        result = sweep(db, settings)

    assert expired in result.requeued and expired in result.dispatch
    assert get_job(db_url, expired).status == QUEUED
    hopeless_job = get_job(db_url, hopeless)
    assert hopeless_job.status == FAILED and hopeless_job.error["code"] == "worker_lost"
    assert get_job(db_url, cancelling).status == CANCELLED
    assert get_job(db_url, alive).status == RUNNING
    assert get_job(db_url, stuck).error["code"] == "validation_interrupted"
    assert get_job(db_url, validating).status == "validating"
    assert unsent in result.dispatch and lost in result.dispatch
    assert fresh not in result.dispatch and sent not in result.dispatch and alive not in result.dispatch

    # A second sweeper right after finds nothing left to send (dispatch is claimed by CAS).
    with session_scope(db_url) as db:
        again = sweep(db, settings)
    assert not set(again.dispatch) & {expired, unsent, lost}
