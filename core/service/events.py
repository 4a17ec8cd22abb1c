"""The append-only job event log (GET /jobs/{id}/events)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from sqlalchemy.orm import Session

from core.service.models import JobEvent, utcnow

# Every type a job's event log holds (docs/service.md, "Events"): a new one is added here first.
EventType = Literal[
    "job.created", "job.validated", "job.queued", "job.deferred", "job.started", "job.resumed",
    "phase", "epoch", "metrics",  # metrics: throttled step progress
    "message",  # engine log lines
    "job.cancel_requested", "job.requeued", "job.succeeded", "job.failed", "job.cancelled",
    "artifact.uploaded", "warning",
]
EventLevel = Literal["info", "warn", "error"]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))
EVENT_LEVELS: frozenset[str] = frozenset(get_args(EventLevel))


def add_event(session: Session, job_id: str, type: EventType, message: str, level: EventLevel = "info",
              data: dict[str, Any] | None = None) -> JobEvent:
    # checked at run time too: the type is a string column, and a misspelt one would reach clients unseen
    if type not in EVENT_TYPES or level not in EVENT_LEVELS:
        raise ValueError(f"unknown event type or level: {type!r}, {level!r}")
    event = JobEvent(job_id=job_id, type=type, message=message, level=level, data=data,
                     created_at=utcnow())
    session.add(event)
    return event
