"""The append-only job event log (GET /jobs/{id}/events)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.service.models import JobEvent, utcnow

# Event types: job.created, job.validated, job.queued, job.started, job.resumed, phase, epoch,
# metrics (throttled step progress), message (engine log), job.cancel_requested, job.requeued,
# job.succeeded, job.failed, job.cancelled, artifact.uploaded, warning.


def add_event(session: Session, job_id: str, type: str, message: str, level: str = "info",
              data: dict[str, Any] | None = None) -> JobEvent:
    event = JobEvent(job_id=job_id, type=type, message=message, level=level, data=data,
                     created_at=utcnow())
    session.add(event)
    return event
