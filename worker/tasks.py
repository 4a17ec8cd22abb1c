"""The one task. It receives only the job id; everything else comes from the database."""

from __future__ import annotations

from functools import lru_cache

from core.service.artifacts import open_store
from core.service.settings import TASK_NAME
from worker.celery_app import SHUTDOWN, app, dispatch, settings
from worker.runner import JobRunner


@lru_cache(maxsize=1)
def runner() -> JobRunner:
    return JobRunner(settings, open_store(settings), SHUTDOWN, dispatch)


@app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
def run_job(job_id: str) -> str:
    """Idempotent: returns 'skipped' when the job is finished, cancelled or held by another worker."""
    return runner().run(job_id)
