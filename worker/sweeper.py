"""Background thread in every worker: the reaper sweep (core.service.reaper) at start and periodically."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable

from sqlalchemy import select

from core.service import lease
from core.service.db import session_scope
from core.service.models import TERMINAL, Job
from core.service.reaper import sweep
from core.service.settings import Settings

log = logging.getLogger("worker.sweeper")


def sweep_once(settings: Settings, dispatch: Callable[[str], None]) -> list[str]:
    with session_scope(settings.database_url) as db:
        result = sweep(db, settings)
    sent = []
    for job_id in result.dispatch:
        try:
            dispatch(job_id)
            sent.append(job_id)
        except Exception as exc:  # noqa: BLE001 - broker down: retried at the next sweep
            log.warning("could not send %s: %s", job_id, exc)
            with session_scope(settings.database_url) as db:
                lease.undo_dispatch(db, job_id)
    return sent


def clean_work_dirs(settings: Settings) -> list[str]:
    """Remove this host's work dirs of jobs that ended or were deleted while it was not running them
    (e.g. cancelled while queued after a worker loss); live jobs keep theirs for resume."""
    root = settings.work_path
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("job_")]
    if not names:
        return []
    with session_scope(settings.database_url) as db:
        live = set(db.scalars(select(Job.id).where(Job.id.in_(names), Job.status.not_in(TERMINAL))).all())
    removed = [n for n in names if n not in live]
    for name in removed:
        shutil.rmtree(root / name, ignore_errors=True)
    return removed


class Sweeper(threading.Thread):
    def __init__(self, settings: Settings, dispatch: Callable[[str], None]) -> None:
        super().__init__(name="muscle-sweeper", daemon=True)
        self.settings = settings
        self.dispatch = dispatch
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                sweep_once(self.settings, self.dispatch)
                clean_work_dirs(self.settings)
            except Exception as exc:  # noqa: BLE001 - keep sweeping; the DB may come back
                log.warning("sweep failed: %s", exc)
            if self.stopped.wait(self.settings.reaper_interval_seconds):
                return

    def stop(self) -> None:
        self.stopped.set()
