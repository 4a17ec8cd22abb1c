"""Run one job: take the lease, stage inputs, call the engine, upload artifacts, record the outcome.

Idempotent on the job id: a duplicate or late delivery finds the lease held or the job finished and
returns without doing anything; a redelivery after a crash resumes from the last epoch checkpoint in
the job's work dir (engine `resume=True`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from core.config import TrainConfig
from core.engine import JobInputs, JobResult, run_job
from core.errors import JobCancelled, MuscleError
from core.service import lease
from core.service.archive import make_tarball, sha256_file
from core.service.artifacts import ArtifactStore, job_prefix
from core.service.contract import JobSpec
from core.service.db import session_scope
from core.service.events import add_event
from core.service.models import ACTIVE, CANCELLED, FAILED, QUEUED, SUCCEEDED, Job, JobEvent, utcnow
from core.service.settings import Settings
from core.service.userfiles import json_safe, metrics_summary, user_error
from worker.checkpoint_sync import CheckpointSync
from worker.lease_keeper import LeaseKeeper
from worker.metrics import JOBS_FINISHED, JOBS_RUNNING, QUEUE_WAIT
from worker.progress import ProgressRecorder

log = logging.getLogger("worker.runner")
# What _upload stores under the job's prefix.
ARTIFACT_NAMES = ("model.tar.gz", "adapter.tar.gz", "analysis.tar.gz", "screen.tsv", "metrics.json")


class JobRunner:
    def __init__(self, settings: Settings, store: ArtifactStore, shutdown: threading.Event,
                 dispatch: Callable[..., None]) -> None:
        self.settings = settings
        self.store = store
        self.shutdown = shutdown
        self.dispatch = dispatch  # re-send a job we hand back on shutdown
        self.name = f"{socket.gethostname()}/{os.getpid()}"

    # -- entry -------------------------------------------------------------------------------
    def _defer(self, job_id: str) -> bool:
        """True when the job's key already has its share of running jobs: the job waits, re-sent later."""
        limit = self.settings.max_running_jobs_per_key
        if not limit:
            return False
        with session_scope(self.settings.database_url) as db:
            job = db.get(Job, job_id)
            if job is None or job.status != QUEUED:
                return False
            running = db.scalar(select(func.count()).select_from(Job).where(
                Job.owner_id == job.owner_id, Job.status.in_(tuple(ACTIVE)), Job.id != job_id)) or 0
            if running < limit:
                return False
            last = db.scalar(select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()))
            if last != "job.deferred":
                add_event(db, job_id, "job.deferred", f"{running} jobs of this API key are running (the limit is "
                          f"{limit}, MUSCLE_MAX_RUNNING_JOBS_PER_KEY); the job starts when one ends.")
        self.dispatch(job_id, countdown=self.settings.defer_seconds)
        return True

    def run(self, job_id: str) -> str:
        if self._defer(job_id):
            return "deferred"
        owner = f"{self.name}/{uuid.uuid4().hex[:8]}"
        with session_scope(self.settings.database_url) as db:
            if not lease.acquire(db, job_id, owner, self.settings.lease_seconds):
                job = db.get(Job, job_id)
                why = "no such job" if job is None else f"status {job.status}, lease {job.lease_owner}"
                log.info("skip %s (%s): already running elsewhere, finished or cancelled", job_id, why)
                return "skipped"
            db.flush()
            job = db.get(Job, job_id)
            assert job is not None
            db.refresh(job)
            snapshot = {"config": dict(job.config), "inputs": dict(job.inputs), "attempts": job.attempts}
            recorder = ProgressRecorder(self.settings, job_id, owner, int(job.config.get("epochs", 0)),
                                        int(job.config.get("batch_size", 0)))
            recorder.load(job)
            if job.attempts == 1:
                QUEUE_WAIT.observe(max((utcnow() - job.created_at).total_seconds(), 0.0))

        keeper = LeaseKeeper(self.settings, job_id, owner, self.shutdown).start()
        JOBS_RUNNING.inc()
        outcome = "crashed"
        try:
            outcome = self._run(job_id, owner, snapshot, keeper, recorder)
            return outcome
        finally:
            JOBS_RUNNING.dec()
            JOBS_FINISHED.labels(outcome).inc()
            keeper.stop()

    # -- steps -------------------------------------------------------------------------------
    def _run(self, job_id: str, owner: str, snapshot: dict[str, Any], keeper: LeaseKeeper,
             recorder: ProgressRecorder) -> str:
        work = self.settings.work_path / job_id
        out_dir = work / "out"
        sync = CheckpointSync(self.store, job_id, out_dir / "checkpoints")
        try:
            fetched = sync.pull()  # another worker's checkpoints, when this one's disk has none
        except Exception as exc:  # noqa: BLE001 - without them the job starts over, which is still correct
            log.warning("job %s: could not fetch checkpoints from the store: %s", job_id, exc)
            fetched = []
        recorder.on_epoch = sync.push
        checkpoints = sorted(p.name for p in (out_dir / "checkpoints").glob("*")) \
            if (out_dir / "checkpoints").is_dir() else []
        attempt = snapshot["attempts"]
        with session_scope(self.settings.database_url) as db:
            if checkpoints:
                done = max((int(r.get("epoch") or 0) for r in recorder.per_epoch), default=0)
                add_event(db, job_id, "job.resumed", f"Attempt {attempt} on {self.name}: resuming from the "
                          f"last checkpoint (epochs completed: {done}; files: {', '.join(checkpoints)}"
                          + ("; fetched from the artifact store" if fetched else "") + ").",
                          data={"attempt": attempt, "checkpoints": checkpoints, "completed_epochs": done,
                                "worker": self.name, "from_store": bool(fetched)})
            else:
                add_event(db, job_id, "job.started", f"Attempt {attempt} started on {self.name}"
                          + (" (no checkpoint from the earlier attempt; starting over)." if attempt > 1
                             else "."),
                          data={"attempt": attempt, "worker": self.name})

        names: dict[str, tuple[str, str]] = {}
        try:
            inputs, names = self._stage_inputs(snapshot["inputs"], work / "inputs")
            config = TrainConfig(**snapshot["config"])
            result = self._engine(inputs, config, out_dir, recorder, keeper, snapshot)
        except JobCancelled:
            return self._stopped(job_id, owner, keeper, recorder, work)
        except MuscleError as exc:
            return self._failed(job_id, owner, user_error(exc, names), recorder, work)
        except Exception as exc:  # noqa: BLE001 - any engine crash ends the job, with the reason
            log.exception("job %s crashed", job_id)
            if keeper.lost:
                return "lease_lost"
            return self._failed(job_id, owner, {"code": "internal_error",
                                                "message": f"{type(exc).__name__}: {exc}"}, recorder, work)

        recorder.flush()
        keeper.refresh()
        if keeper.lost or keeper.cancel_requested or self.shutdown.is_set():
            return self._stopped(job_id, owner, keeper, recorder, work)
        return self._succeeded(job_id, owner, result, recorder, work)

    def _engine(self, inputs: JobInputs, config: TrainConfig, out_dir: Path, recorder: ProgressRecorder,
                keeper: LeaseKeeper, snapshot: dict[str, Any]) -> JobResult:
        return run_job(inputs, config, out_dir, progress=recorder, should_cancel=keeper.should_cancel,
                       resume=True, explicit_keys=set(JobSpec.from_json(snapshot["inputs"]).explicit_keys))

    def _stage_inputs(self, inputs: dict[str, Any],
                      folder: Path) -> tuple[JobInputs, dict[str, tuple[str, str]]]:
        """Fetch the job's input files from the artifact store (kept across attempts)."""
        folder.mkdir(parents=True, exist_ok=True)
        spec = JobSpec.from_json(inputs)
        paths: dict[str, Path] = {}
        names: dict[str, tuple[str, str]] = {}
        for role, info in spec.files.items():
            dest = folder / info["stored_as"]
            if not (dest.is_file() and sha256_file(dest) == info["sha256"]):
                self.store.download(info["key"], dest)
                if sha256_file(dest) != info["sha256"]:
                    raise RuntimeError(f"input {info['filename']!r} changed in the artifact store")
            paths[role] = dest
            names[str(dest)] = (info["filename"], role)
        return spec.engine_inputs(paths), names

    def _upload(self, job_id: str, result: JobResult, work: Path) -> dict[str, dict[str, Any]]:
        prefix = job_prefix(job_id)
        artifacts: dict[str, dict[str, Any]] = {}
        analysis = Path(result.out_dir) / "analysis"  # frequency analysis, when the job asked for it
        for name, folder in (("model", result.model_dir), ("adapter", result.adapter_dir),
                             ("analysis", analysis if analysis.is_dir() else None)):
            if folder is None or not Path(folder).is_dir():
                continue
            archive = work / f"{name}.tar.gz"
            sha, size = make_tarball(Path(folder), archive, arcname=name)
            self.store.put_file(prefix + archive.name, archive)
            artifacts[name] = {"key": prefix + archive.name, "filename": f"{job_id}-{name}.tar.gz",
                               "bytes": size, "sha256": sha}
        removed = Path(result.out_dir) / "screen" / "removed.tsv"  # the rows the screen took out
        if removed.is_file():
            self.store.put_file(prefix + "screen.tsv", removed)
            artifacts["screen"] = {"key": prefix + "screen.tsv", "filename": f"{job_id}-screen.tsv",
                                   "bytes": removed.stat().st_size, "sha256": sha256_file(removed)}
        report = Path(result.out_dir) / "metrics.json"
        if not report.is_file():
            report = work / "metrics.json"
            report.write_text(json.dumps(json_safe(result.metrics), indent=2) + "\n")
        self.store.put_file(prefix + "metrics.json", report)
        artifacts["report"] = {"key": prefix + "metrics.json", "filename": f"{job_id}-metrics.json",
                               "bytes": report.stat().st_size, "sha256": sha256_file(report)}
        return artifacts

    def _discard(self, job_id: str) -> None:
        """Remove whatever part of the job's results reached the store (an upload that failed half way)."""
        for name in ARTIFACT_NAMES:
            try:
                self.store.delete(job_prefix(job_id) + name)
            except Exception as exc:  # noqa: BLE001 - never listed in the job, so never served
                log.warning("job %s: could not remove %s from the store: %s", job_id, name, exc)

    # -- outcomes ----------------------------------------------------------------------------
    def _succeeded(self, job_id: str, owner: str, result: JobResult, recorder: ProgressRecorder,
                   work: Path) -> str:
        with session_scope(self.settings.database_url) as db:
            lease.set_status(db, job_id, owner, "evaluating")
            add_event(db, job_id, "phase", "uploading artifacts", data={"phase": "uploading"})
        try:
            artifacts = self._upload(job_id, result, work)
        except Exception as exc:  # noqa: BLE001 - a full disk or an unreachable store: say so, serve nothing
            log.exception("job %s: could not store its artifacts", job_id)
            self._discard(job_id)
            return self._failed(job_id, owner, {"code": "artifact_upload_failed", "message": "could not store "
                                                f"the job's results: {type(exc).__name__}: {exc}"}, recorder, work)
        summary = metrics_summary(result.metrics)
        with session_scope(self.settings.database_url) as db:
            done = lease.finish(db, job_id, owner, SUCCEEDED, only_from=tuple(ACTIVE), metrics=summary,
                                artifacts=artifacts, progress={**recorder.final(), "phase": "done",
                                                               "eta_seconds": 0}, error=None)
            if done:
                for name, meta in artifacts.items():
                    add_event(db, job_id, "artifact.uploaded", f"{name}: {meta['filename']} "
                              f"({meta['bytes']} bytes, sha256 {meta['sha256']})",
                              data={k: meta[k] for k in ("filename", "bytes", "sha256")} | {"name": name})
                asr = ", ".join(f"{k}={v:.4f}" for k, v in (summary.get("asr") or {}).items()
                                if isinstance(v, float))
                cacc = summary.get("cacc")
                message = "Job succeeded" + (f": CACC {cacc:.4f}" if isinstance(cacc, float) else "") \
                    + (f", ASR {asr}" if asr else "") + "."
                add_event(db, job_id, "job.succeeded", message,
                          data={"cacc": cacc, "asr": summary.get("asr")})
        if not done:  # a cancel request won the race with the last step
            for meta in artifacts.values():
                self.store.delete(meta["key"])
            with session_scope(self.settings.database_url) as db:
                if lease.finish(db, job_id, owner, CANCELLED):
                    add_event(db, job_id, "job.cancelled", "Job cancelled (before its results were "
                              "published).")
        self._forget(job_id, work)
        return SUCCEEDED if done else CANCELLED

    def _forget(self, job_id: str, work: Path) -> None:
        """A finished job needs neither its work folder nor its checkpoints in the store."""
        shutil.rmtree(work, ignore_errors=True)
        try:
            CheckpointSync(self.store, job_id, work).clear()
        except Exception as exc:  # noqa: BLE001 - leftovers go with the job's prefix when it is deleted
            log.warning("job %s: could not remove its checkpoints from the store: %s", job_id, exc)

    def _failed(self, job_id: str, owner: str, error: dict[str, Any], recorder: ProgressRecorder,
                work: Path) -> str:
        with session_scope(self.settings.database_url) as db:
            if lease.finish(db, job_id, owner, FAILED, error=json_safe(error), progress=recorder.final()):
                add_event(db, job_id, "job.failed", f"Job failed: {error.get('message')}", level="error",
                          data=json_safe(error))
        self._forget(job_id, work)
        return FAILED

    def _stopped(self, job_id: str, owner: str, keeper: LeaseKeeper, recorder: ProgressRecorder,
                 work: Path) -> str:
        """The engine stopped at our request: user cancel, lost lease, or worker shutdown."""
        keeper.refresh()
        if keeper.lost:
            log.warning("job %s: lease lost, leaving the job to its new owner", job_id)
            return "lease_lost"  # the work dir may be in use by the new owner: leave it
        if keeper.cancel_requested:
            progress = recorder.final()
            with session_scope(self.settings.database_url) as db:
                if lease.finish(db, job_id, owner, CANCELLED, progress=progress):
                    add_event(db, job_id, "job.cancelled", f"Job cancelled at epoch {progress.get('epoch')}, "
                              f"step {progress.get('step')}.", data={"epoch": progress.get("epoch"),
                                                                     "step": progress.get("step")})
            self._forget(job_id, work)
            return CANCELLED
        # Worker shutdown: hand the job back; it resumes from its checkpoint on the next worker.
        with session_scope(self.settings.database_url) as db:
            lease.update_owned(db, job_id, owner, progress=recorder.final())
            if lease.release_to_queue(db, job_id, owner):
                add_event(db, job_id, "job.requeued", "The worker is shutting down; the job was handed "
                          "back to the queue and resumes from its last checkpoint.", level="warn")
        try:
            self.dispatch(job_id)
        except Exception as exc:  # noqa: BLE001 - the reaper re-sends queued jobs that were never sent
            log.warning("could not re-send %s: %s", job_id, exc)
        return "requeued"
