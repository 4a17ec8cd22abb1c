"""The sweep that makes sure no accepted job silently disappears.

Run periodically by every worker (and once at worker start). Each step is a compare-and-set, so many
workers sweeping at once do no harm. It returns the job ids whose task message must be (re-)sent;
the caller sends them through the queue (this package has no queue imports) and calls
`undo_dispatch` when a send fails.

1. running/evaluating with an expired lease (worker died, kill -9, OOM, node lost): back to queued
   and re-sent; the next worker resumes from the job's last epoch checkpoint. After `max_attempts`
   leases the job fails with `worker_lost` instead (a job that kills its worker must not loop).
2. cancelling with an expired lease: the worker died while cancelling -> cancelled.
3. queued and never sent (broker was down when the API accepted it) -> sent.
4. queued, sent long ago (`redispatch_after_seconds`) and still not taken: the message may have been
   lost (broker restart without persistence, evicted key, a transport without redelivery) -> re-sent.
   A duplicate message is harmless: the task finds the lease held or the job no longer queued.
5. validating for longer than `validating_timeout_seconds`: the API process died mid-request ->
   failed (`validation_interrupted`), so an Idempotency-Key retry gets an answer instead of 409.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.service import lease
from core.service.events import add_event
from core.service.models import ACTIVE, CANCELLED, CANCELLING, FAILED, QUEUED, VALIDATING, Job, utcnow
from core.service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    dispatch: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


def sweep(session: Session, settings: Settings, now: datetime | None = None) -> SweepResult:
    now = now or utcnow()
    out = SweepResult()

    stale = session.execute(
        select(Job.id, Job.status, Job.attempts).where(
            Job.status.in_((*ACTIVE, CANCELLING)),
            or_(Job.lease_expires_at < now, Job.lease_owner.is_(None)),
        )).all()
    for job_id, status, attempts in stale:
        if status == CANCELLING:
            if lease.expire_to_status(session, job_id, now, CANCELLED):
                add_event(session, job_id, "job.cancelled", "Job cancelled (its worker stopped).")
                out.cancelled.append(job_id)
        elif attempts >= settings.max_attempts:
            error = {"code": "worker_lost",
                     "message": f"the worker running this job was lost {attempts} times; giving up"}
            if lease.expire_to_status(session, job_id, now, FAILED, error=error):
                add_event(session, job_id, "job.failed", error["message"], level="error", data=error)
                out.failed.append(job_id)
        elif lease.expire_to_queue(session, job_id, now):
            add_event(session, job_id, "job.requeued",
                      f"Worker lease expired (attempt {attempts}); job re-queued, it resumes from its "
                      "last checkpoint.", level="warn", data={"attempt": attempts})
            out.requeued.append(job_id)
    session.commit()

    interrupted = session.execute(
        update(Job).where(Job.status == VALIDATING,
                          Job.created_at < now - timedelta(seconds=settings.validating_timeout_seconds))
        .values(status=FAILED, finished_at=now, updated_at=now,
                error={"code": "validation_interrupted",
                       "message": "the server stopped while validating this job's files; submit it again"})
        .returning(Job.id)).scalars().all()
    out.failed.extend(interrupted)
    session.commit()

    grace_before = now - timedelta(seconds=settings.dispatch_grace_seconds)
    stale_before = now - timedelta(seconds=settings.redispatch_after_seconds)
    candidates = session.scalars(
        select(Job.id).where(
            Job.status == QUEUED, Job.lease_owner.is_(None),
            or_(Job.dispatched_at.is_(None), Job.dispatched_at < stale_before),
        ).order_by(Job.created_at)).all()
    for job_id in candidates:
        # Re-queued jobs (step 1) are sent at once; API-created ones get a grace period.
        grace = now if job_id in out.requeued else grace_before
        if lease.claim_dispatch(session, job_id, now, grace_before=grace + timedelta(microseconds=1),
                                stale_before=stale_before):
            out.dispatch.append(job_id)
    session.commit()
    if out.dispatch or out.failed or out.cancelled:
        log.info("sweep: dispatch=%s failed=%s cancelled=%s", out.dispatch, out.failed, out.cancelled)
    return out
