"""Sending work to the worker. Only the task *name* and the job id cross; api/ never imports worker/."""

from __future__ import annotations

from celery import Celery

from core.service.settings import TASK_NAME, Settings, broker_options


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue
        self.celery = Celery("muscle-api", broker=settings.broker_url, set_as_current=False)
        self.celery.conf.update(
            broker_transport_options=broker_options(settings),
            broker_connection_timeout=3,
            broker_connection_retry_on_startup=False,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                       "interval_max": 1},
        )

    def send(self, job_id: str) -> None:
        """Raises when the broker is unreachable; the job then stays queued for the reaper."""
        # task_id = job id: duplicates are harmless (the worker's lease check drops them).
        self.celery.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=self.queue)

    def ping(self) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
