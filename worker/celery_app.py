"""The Celery app: `celery -A worker.celery_app worker` (settings from MUSCLE_* variables).

One training at a time per worker process (solo pool, concurrency 1, prefetch 1), late acks so a
crash does not lose the message; the database lease, not the broker, decides who runs a job
(see core/service/lease.py and docs/service.md "Reliability").
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, signals

from core.service.settings import TASK_NAME, broker_options, get_settings

settings = get_settings()
log = logging.getLogger("worker")

app = Celery("muscle", broker=settings.broker_url, include=["worker.tasks"])
app.conf.update(
    task_acks_late=True,  # ack after the run: a crash leaves the message for redelivery
    task_reject_on_worker_lost=True,
    # A broker restart must not stop a training: the database lease decides who runs a job, and the
    # sweep re-sends what the broker lost (tests/service/test_faults.py). Celery 6 will default to True.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    worker_prefetch_multiplier=1,  # never hold a second job while training one
    worker_concurrency=1,
    worker_pool="solo",  # the task runs in the worker's main process: no fork with CUDA
    task_ignore_result=True,  # results live in the database and the artifact store
    task_default_queue=settings.queue,
    task_routes={TASK_NAME: {"queue": settings.queue}},
    broker_transport_options=broker_options(settings),
    broker_connection_retry_on_startup=True,
    # The SQLite broker has no fanout exchange for remote control.
    worker_enable_remote_control=not settings.broker_url.startswith("sqla+"),
    worker_hijack_root_logger=False,
)

SHUTDOWN = threading.Event()  # set on warm shutdown; the running job is handed back at the next step
_sweeper: Any = None


def dispatch(job_id: str, countdown: float | None = None) -> None:
    app.send_task(TASK_NAME, args=[job_id], task_id=job_id, queue=settings.queue, countdown=countdown)


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="[%(asctime)s: %(levelname)s/%(name)s] %(message)s")


@signals.worker_init.connect
def _lower_priority(**_: Any) -> None:
    """Training takes every core it is given; at a lower CPU priority it still does when the host is
    otherwise idle, but an API (or database) on the same host answers first."""
    raise_niceness(settings.worker_nice)


def raise_niceness(target: int) -> int:
    """Raise this process's niceness to `target` (never lower it: that needs privileges)."""
    current = os.nice(0)
    return os.nice(target - current) if target > current else current


@signals.worker_ready.connect
def _on_ready(**_: Any) -> None:
    global _sweeper
    from worker.sweeper import Sweeper

    settings.ensure_dirs()
    if settings.worker_metrics_port:
        from worker.metrics import start_exporter

        start_exporter(settings.worker_metrics_port, settings.worker_metrics_host)
    _sweeper = Sweeper(settings, dispatch)
    _sweeper.start()  # its first pass is the startup sweep
    _preload()


def _preload() -> None:
    """Import torch/transformers before the first message is taken (the solo pool consumes in this
    thread), so the first job starts training sooner. Not in a background thread: importing
    transformers from two threads at once can fail."""
    try:
        import transformers  # noqa: F401

        import core.pipeline  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - the job itself will report a real import problem
        log.warning("preload failed: %s", exc)


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    SHUTDOWN.set()
    if _sweeper is not None:
        _sweeper.stop()
