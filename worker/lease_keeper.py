"""Per-job heartbeat thread and the cheap cancel check the engine polls every training step."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from core.service import lease
from core.service.db import session_scope
from core.service.models import Job
from core.service.settings import Settings

log = logging.getLogger("worker.lease")


class LeaseKeeper:
    """Renews the job's lease every `heartbeat_seconds`; `should_cancel()` turns True when the user
    cancelled, the lease was lost (another worker owns the job now) or this worker is shutting down."""

    def __init__(self, settings: Settings, job_id: str, owner: str, shutdown: threading.Event) -> None:
        self.settings = settings
        self.job_id = job_id
        self.owner = owner
        self.shutdown = shutdown
        self.lost = False
        self.cancel_requested = False
        self._checked_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        expires = time.monotonic() + self.settings.lease_seconds
        while not self._stop.wait(self.settings.heartbeat):
            try:
                with session_scope(self.settings.database_url) as db:
                    ok = lease.renew(db, self.job_id, self.owner, self.settings.lease_seconds)
                if not ok:
                    log.warning("lease on %s lost; stopping the run", self.job_id)
                    self.lost = True
                    return
                expires = time.monotonic() + self.settings.lease_seconds
            except Exception as exc:  # noqa: BLE001 - DB hiccup: retry until the lease would lapse
                log.warning("heartbeat for %s failed: %s", self.job_id, exc)
                if time.monotonic() > expires:
                    self.lost = True
                    return

    def refresh(self) -> None:
        """Read the cancel flag and lease owner now (one indexed primary-key read)."""
        with session_scope(self.settings.database_url) as db:
            row = db.execute(select(Job.cancel_requested_at, Job.lease_owner)
                             .where(Job.id == self.job_id)).first()
        if row is None:
            self.lost = True  # deleted under us
            return
        self.cancel_requested = row.cancel_requested_at is not None
        if row.lease_owner != self.owner:
            self.lost = True
        self._checked_at = time.monotonic()

    def should_cancel(self) -> bool:
        """Polled every training step: the DB is read at most every `cancel_poll_seconds`."""
        if time.monotonic() - self._checked_at >= self.settings.cancel_poll_seconds:
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - never stop training because of one failed read
                log.warning("cancel check for %s failed: %s", self.job_id, exc)
                self._checked_at = time.monotonic()
        return self.cancel_requested or self.lost or self.shutdown.is_set()
