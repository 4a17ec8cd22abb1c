"""Small helpers shared by the service tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from core.service.auth import create_api_key
from core.service.db import session_scope
from core.service.ids import new_id
from core.service.models import QUEUED, Job, utcnow


def make_job(database_url: str, status: str = QUEUED, created_at: datetime | None = None,
             **values: object) -> str:
    """A bare job row (no files) for lease/reaper tests."""
    with session_scope(database_url) as db:
        key, _ = create_api_key(db, "lease-test")
        fields: dict[str, object] = {"request_config": {}, "config": {}, "inputs": {}, "job_metadata": {},
                                     **values}
        job = Job(id=new_id("job"), owner_id=key.id, status=status, created_at=created_at or utcnow(),
                  updated_at=created_at or utcnow(), **fields)
        db.add(job)
        return job.id


def get_job(database_url: str, job_id: str) -> Job | None:
    with session_scope(database_url) as db:
        return db.get(Job, job_id)


def files(data: dict[str, Path], *roles: str) -> list[tuple[str, tuple[str, bytes]]]:
    """Multipart `files=` for httpx: roles train/aux/eval as fields, `badnets` as a probe_file."""
    out = []
    for role in roles:
        field = "probe_file" if role not in ("train", "aux", "eval") else role
        out.append((field, (data[role].name, data[role].read_bytes())))
    return out
