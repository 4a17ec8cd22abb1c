"""Engine progress events -> job progress, per-epoch metrics and the event log.

Phase and epoch events are always written; step events are throttled to one write (progress plus a
`metrics` event) every `progress_interval_seconds`, because the engine reports every optimiser step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.engine import ProgressEvent
from core.service import lease
from core.service.contract import PROGRESS_FIELDS
from core.service.db import session_scope
from core.service.events import EventType, add_event
from core.service.models import EVALUATING, Job
from core.service.settings import Settings
from core.service.userfiles import json_safe
from worker.metrics import StepClock

log = logging.getLogger("worker.progress")

EVALUATING_PHASES = ("exporting", "evaluating")


class ProgressRecorder:
    def __init__(self, settings: Settings, job_id: str, owner: str, total_epochs: int,
                 batch_size: int = 0) -> None:
        self.settings = settings
        self.clock = StepClock(batch_size)
        self.on_epoch: Callable[[], None] | None = None  # e.g. push the epoch's checkpoint to the store
        self.job_id = job_id
        self.owner = owner
        self.state: dict[str, Any] = {**dict.fromkeys(PROGRESS_FIELDS), "total_epochs": total_epochs}
        self.per_epoch: list[dict[str, Any]] = []
        self._last_step_write = 0.0  # step writes have their own clock: epochs may be shorter
        self._dirty = False

    def load(self, job: Job) -> None:
        """Continue from what an earlier attempt recorded (resume)."""
        if job.progress:
            self.state.update({k: v for k, v in job.progress.items() if k in self.state})
        if job.metrics and job.metrics.get("per_epoch"):
            self.per_epoch = list(job.metrics["per_epoch"])

    def __call__(self, event: ProgressEvent) -> None:
        try:
            self._handle(event)
        except Exception as exc:  # noqa: BLE001 - progress is best effort; training goes on
            log.warning("could not record progress for %s: %s", self.job_id, exc)

    def _progress(self) -> dict[str, Any]:
        return json_safe({**self.state, "updated_at": int(time.time())})

    def _handle(self, ev: ProgressEvent) -> None:
        if ev.replayed and any(r.get("epoch") == ev.epoch for r in self.per_epoch):
            return  # an epoch an earlier attempt recorded
        if ev.epoch is not None:
            self.state["epoch"] = ev.epoch
        if ev.step is not None:
            self.state["step"] = ev.step
        if ev.total_steps is not None:
            self.state["total_steps"] = ev.total_steps
        if ev.loss is not None:
            self.state["loss"] = ev.loss
        if ev.eta_seconds is not None:
            self.state["eta_seconds"] = ev.eta_seconds

        if ev.kind == "step":
            self.clock.step(ev.step)
            self._dirty = True
            if time.monotonic() - self._last_step_write >= self.settings.progress_interval_seconds:
                self._last_step_write = time.monotonic()
                self._write(("metrics", f"step {ev.step}/{ev.total_steps}",
                             {"step": ev.step, "total_steps": ev.total_steps, "epoch": ev.epoch,
                              "loss": ev.loss, "eta_seconds": ev.eta_seconds}))
            return
        if ev.kind == "phase":
            self.state["phase"] = ev.phase
            status = EVALUATING if ev.phase in EVALUATING_PHASES else None
            self._write(("phase", ev.message or ev.phase, {"phase": ev.phase}), status=status)
        elif ev.kind == "epoch":
            row = {"epoch": ev.epoch, **(ev.metrics or {})}
            self.per_epoch = [r for r in self.per_epoch if r.get("epoch") != ev.epoch] + [row]
            summary = ", ".join(f"{k}={v:.4g}" for k, v in (ev.metrics or {}).items()
                                if isinstance(v, float))
            if self.on_epoch is not None:  # first, so an epoch the job reports done is one another worker
                self.on_epoch()  # could resume from (the engine saved its checkpoint before this event)
            self._write(("epoch", f"epoch {ev.epoch}/{self.state['total_epochs']} done"
                         + (f": {summary}" if summary else ""), row), per_epoch=True)
        else:  # log
            self._write(("message", ev.message or "", ev.metrics))

    def _write(self, event: tuple[EventType, str, dict[str, Any] | None] | None, status: str | None = None,
               per_epoch: bool = False) -> None:
        values: dict[str, Any] = {"progress": self._progress()}
        if per_epoch:
            values["metrics"] = json_safe({"per_epoch": self.per_epoch})
        with session_scope(self.settings.database_url) as db:
            if status:
                lease.set_status(db, self.job_id, self.owner, status)
            if lease.update_owned(db, self.job_id, self.owner, **values) and event:
                kind, message, data = event
                add_event(db, self.job_id, kind, message, data=json_safe(data) if data else None)
        self._dirty = False

    def flush(self) -> None:
        if self._dirty:
            self._write(None)  # the latest step state, no event

    def final(self) -> dict[str, Any]:
        return self._progress()
