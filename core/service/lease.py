"""Database lease: a job runs in at most one worker at a time.

Every change of ownership is one UPDATE ... WHERE (compare-and-set) whose rowcount says who won, so
it is safe under concurrent workers on PostgreSQL and SQLite alike. A worker renews its lease by
heartbeat; a lease that is not renewed expires and the reaper (core.service.reaper) hands the job on.
A duplicate delivery of the task (broker visibility timeout, reaper re-send) finds the lease held or
the job finished and exits without touching the job.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.orm import Session

from core.service.models import ACTIVE, CANCELLED, CANCELLING, EVALUATING, QUEUED, RUNNING, Job, utcnow

# Statuses in which a worker may take the job: queued, or active with a dead (expired) owner.
CLAIMABLE = (QUEUED, RUNNING, EVALUATING)


def _cas(session: Session, *where: Any, **values: Any) -> bool:
    result = session.execute(
        update(Job).where(*where).values(**values).execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def acquire(session: Session, job_id: str, owner: str, lease_seconds: float,
            now: datetime | None = None) -> bool:
    """Take the job (status -> running, attempts + 1) if nobody holds a live lease on it."""
    now = now or utcnow()
    return _cas(
        session,
        Job.id == job_id,
        Job.status.in_(CLAIMABLE),
        Job.cancel_requested_at.is_(None),
        or_(Job.lease_owner.is_(None), Job.lease_expires_at < now),
        status=RUNNING,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempts=Job.attempts + 1,
        started_at=func.coalesce(Job.started_at, now),
        updated_at=now,
    )


def renew(session: Session, job_id: str, owner: str, lease_seconds: float,
          now: datetime | None = None) -> bool:
    """Heartbeat. False means the lease was taken away (reaper) and the owner must stop."""
    now = now or utcnow()
    return _cas(session, Job.id == job_id, Job.lease_owner == owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds))


def set_status(session: Session, job_id: str, owner: str, status: str, **values: Any) -> bool:
    """Move an active job between running and evaluating; never overrides a cancel request."""
    return _cas(session, Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE),
                status=status, updated_at=utcnow(), **values)


def update_owned(session: Session, job_id: str, owner: str, **values: Any) -> bool:
    """Write progress/metrics only while still the owner."""
    return _cas(session, Job.id == job_id, Job.lease_owner == owner, updated_at=utcnow(), **values)


def finish(session: Session, job_id: str, owner: str, status: str, only_from: tuple[str, ...] | None = None,
           **values: Any) -> bool:
    """Terminal transition by the owner; releases the lease. `only_from` guards e.g. succeeded
    against a cancel request that arrived meanwhile."""
    now = utcnow()
    where = [Job.id == job_id, Job.lease_owner == owner]
    if only_from:
        where.append(Job.status.in_(only_from))
    return _cas(session, *where,
                status=status, lease_owner=None, lease_expires_at=None, finished_at=now,
                updated_at=now, **values)


def release_to_queue(session: Session, job_id: str, owner: str) -> bool:
    """Give the job back (worker shutting down): queued again, resumes from its checkpoint."""
    return _cas(session, Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE),
                status=QUEUED, lease_owner=None, lease_expires_at=None, dispatched_at=None,
                updated_at=utcnow())


def expire_to_queue(session: Session, job_id: str, now: datetime) -> bool:
    """Reaper: an active job whose owner stopped heartbeating goes back to the queue."""
    return _cas(session, Job.id == job_id, Job.status.in_(ACTIVE),
                or_(Job.lease_owner.is_(None), Job.lease_expires_at < now),
                status=QUEUED, lease_owner=None, lease_expires_at=None, dispatched_at=None,
                updated_at=now)


def expire_to_status(session: Session, job_id: str, now: datetime, status: str, **values: Any) -> bool:
    """Reaper: end a job whose owner died (cancelling -> cancelled, or too many attempts -> failed)."""
    return _cas(session, Job.id == job_id, Job.status.in_((*ACTIVE, CANCELLING)),
                or_(Job.lease_owner.is_(None), Job.lease_expires_at < now),
                status=status, lease_owner=None, lease_expires_at=None, finished_at=now,
                updated_at=now, **values)


def claim_dispatch(session: Session, job_id: str, now: datetime, grace_before: datetime,
                   stale_before: datetime) -> bool:
    """Reaper: one process wins the right to (re-)send a queued job's task message: never sent (and
    not just created, the API sends those itself) or sent so long ago that the message may be lost."""
    return _cas(session, Job.id == job_id, Job.status == QUEUED, Job.lease_owner.is_(None),
                or_(and_(Job.dispatched_at.is_(None), Job.updated_at < grace_before),
                    Job.dispatched_at < stale_before),
                dispatched_at=now)


def undo_dispatch(session: Session, job_id: str) -> bool:
    """The send failed: leave the job for the next sweep."""
    return _cas(session, Job.id == job_id, Job.status == QUEUED, dispatched_at=None)


def cancel(session: Session, job_id: str, now: datetime | None = None) -> bool:
    """User cancel: a queued job ends at once; an active one becomes cancelling and its worker stops
    within one training step."""
    now = now or utcnow()
    if _cas(session, Job.id == job_id, Job.status.in_((QUEUED,)), Job.lease_owner.is_(None),
            status=CANCELLED, cancel_requested_at=now, finished_at=now, updated_at=now):
        return True
    return _cas(session, Job.id == job_id, Job.status.in_(ACTIVE), status=CANCELLING,
                cancel_requested_at=now, updated_at=now)

