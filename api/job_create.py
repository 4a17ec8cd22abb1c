"""POST /jobs: stage files, honour Idempotency-Key, validate with the engine, store, queue.

Nothing is queued before the engine's own validation (core.stages.validate.validate_inputs) has read every
file; a bad file is answered 422 naming the file, line and field, and leaves no job behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.files import describe, owned_file, purpose_of, register
from api.job_config import JOB_KEYS, JobOptions, check_choices, options_from, parse_config
from api.job_request import ROLES, file_ids, settings_of
from api.queue import Dispatcher
from api.uploads import StagedFile, extension, probe_name, remove, stage
from core.engine import JobInputs
from core.errors import MuscleError
from core.service.artifacts import ArtifactStore, job_prefix
from core.service.contract import JobSpec, engine_inputs
from core.service.events import add_event
from core.service.ids import new_id
from core.service.models import QUEUED, VALIDATING, ApiKey, IdempotencyKey, Job, StoredFile, utcnow
from core.service.settings import Settings
from core.service.userfiles import json_safe, user_error

log = logging.getLogger("api.jobs")


@dataclass
class Created:
    job: Job
    replayed: bool


def _request_hash(options: JobOptions, files: list[StagedFile]) -> str:
    canonical = {"config": options.request,
                 "files": sorted([f.role, f.filename, f.sha256] for f in files)}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _replay(db: Session, owner: ApiKey, key: str, request_hash: str, ttl: int) -> Job | None:
    """The job an earlier request with this key made, or None when the key is new (or expired)."""
    row = db.get(IdempotencyKey, (owner.id, key))
    if row is None:
        return None
    if row.created_at < utcnow() - timedelta(seconds=ttl):
        db.delete(row)
        db.commit()
        return None
    if row.request_hash != request_hash:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with a different "
                       "request; use a new key for a new job", param="Idempotency-Key")
    job = db.get(Job, row.job_id)
    if job is None:
        return None
    if job.status == VALIDATING:
        raise ApiError(409, "idempotency_key_in_progress", "a request with this Idempotency-Key is "
                       "still being processed; retry shortly", param="Idempotency-Key")
    return job


def _stage_all(folder: Path, settings: Settings, train: UploadFile, aux: UploadFile,
               eval_file: UploadFile | None, probe_files: list[UploadFile]) -> list[StagedFile]:
    if len(probe_files) > settings.max_probe_files:
        raise ApiError(422, "too_many_files", f"at most {settings.max_probe_files} probe files",
                       param="probe_file")
    named: list[tuple[str, UploadFile, str]] = []
    for role, upload in (("train", train), ("aux", aux), ("eval", eval_file)):
        if upload is not None:
            named.append((role, upload, f"{role}{extension(role, upload.filename)}"))
    seen: set[str] = set()
    for upload in probe_files:
        name = probe_name(upload.filename)
        if name in seen:
            raise ApiError(422, "invalid_file", f"two probe files are named {name!r}", param="probe_file",
                           file=upload.filename)
        seen.add(name)
        named.append((f"probe:{name}", upload, f"probe-{name}{extension('probe_file', upload.filename)}"))
    return [stage(role, upload.file, upload.filename, folder / stored, settings.max_rows)
            for role, upload, stored in named]


def _inputs(files: list[StagedFile], options: JobOptions) -> JobInputs:
    return engine_inputs({f.role: f.path for f in files}, options.probes, options.text_column,
                         options.label_column)


def _user_error(exc: MuscleError, files: list[StagedFile]) -> ApiError:
    """The engine names our staged paths; give the client back its own file names."""
    body = user_error(exc, {str(f.path): (f.filename, f.role) for f in files})
    return ApiError(422, str(body.pop("code")), str(body.pop("message")), **body)


def _validate(inputs: JobInputs, options: JobOptions) -> dict[str, Any]:
    from core.stages.validate import validate_inputs  # reads every file with the engine's own readers

    result = validate_inputs(inputs, options.train)
    summary = result.summary() if hasattr(result, "summary") else result
    return json_safe(summary or {})  # int label ids -> str keys, NaN -> null


RETRY_AFTER_SECONDS = 60


def _check_queue_limit(db: Session, settings: Settings, owner: ApiKey) -> None:
    limit = settings.max_queued_jobs_per_key
    if not limit:
        return
    waiting = db.scalar(select(func.count()).select_from(Job).where(
        Job.owner_id == owner.id, Job.status.in_((VALIDATING, QUEUED)))) or 0
    if waiting >= limit:
        raise ApiError(429, "too_many_queued_jobs", f"this API key has {waiting} jobs waiting; the limit is "
                       f"{limit} (MUSCLE_MAX_QUEUED_JOBS_PER_KEY): retry when one has started",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _reserve(db: Session, settings: Settings, owner: ApiKey, options: JobOptions, request_hash: str,
             idempotency_key: str | None) -> Created:
    """Insert the job as `validating` (with its idempotency key), or find the one a retry refers to."""
    if idempotency_key and (job := _replay(db, owner, idempotency_key, request_hash,
                                           settings.idempotency_ttl_seconds)):
        return Created(job, replayed=True)
    _check_queue_limit(db, settings, owner)
    job = Job(id=new_id("job"), owner_id=owner.id, status=VALIDATING, created_at=utcnow(),
              request_config=options.request, config=options.train.model_dump(mode="json"),
              inputs={}, job_metadata=options.metadata)
    db.add(job)
    db.flush()  # the job row first: the idempotency row references it
    if idempotency_key:
        db.add(IdempotencyKey(owner_id=owner.id, key=idempotency_key, request_hash=request_hash,
                              job_id=job.id))
    add_event(db, job.id, "job.created", "Job created; validating files.")
    try:
        db.commit()
    except IntegrityError:
        db.rollback()  # a concurrent request with the same key won the insert
        replay = _replay(db, owner, idempotency_key or "", request_hash, settings.idempotency_ttl_seconds)
        if replay is None:
            raise
        return Created(replay, replayed=True)
    return Created(job, replayed=False)


def _accept(db: Session, store: ArtifactStore, job: Job, files: list[StagedFile],
            options: JobOptions) -> None:
    """Validate with the engine, store the inputs, mark queued. Any failure removes the job."""
    try:
        validation = _validate(_inputs(files, options), options)
        prefix = job_prefix(job.id) + "inputs/"
        for f in files:
            store.put_file(prefix + f.path.name, f.path)
        _register_uploads(db, store, job, files, options)
    except BaseException as exc:
        db.rollback()
        db.execute(delete(Job).where(Job.id == job.id))
        db.commit()
        store.delete_prefix(job_prefix(job.id))
        if isinstance(exc, MuscleError):
            raise _user_error(exc, files) from exc
        raise
    job.inputs = JobSpec(files={f.role: f.info(prefix + f.path.name) for f in files},
                         probes=options.probes, text_column=options.text_column,
                         label_column=options.label_column,
                         # settings the client chose (the engine's per-family presets leave them alone)
                         explicit_keys=sorted(k for k in options.request if k not in JOB_KEYS)).to_json()
    job.validation = validation
    job.status = QUEUED
    add_event(db, job.id, "job.validated", "Files validated.", data=validation)
    add_event(db, job.id, "job.queued", "Job queued.")
    db.commit()


def _register_uploads(db: Session, store: ArtifactStore, job: Job, files: list[StagedFile],
                      options: JobOptions) -> None:
    """A multipart job's files become files under /files too, so later jobs can name them by id."""
    owner = db.get(ApiKey, job.owner_id)
    assert owner is not None
    for f in files:
        if f.file_id is None:
            purpose = purpose_of(f.role)
            columns, labels = describe(f, purpose, options.text_column, options.label_column)
            f.file_id = register(db, store, owner, purpose, f, columns, labels)[0].id


def _dispatch(db: Session, dispatcher: Dispatcher, job: Job) -> None:
    try:
        dispatcher.send(job.id)
        job.dispatched_at = utcnow()
    except Exception as exc:  # noqa: BLE001 - broker down: the job is accepted; a sweep sends it later
        log.warning("could not queue %s: %s", job.id, exc)
        add_event(db, job.id, "warning", "The queue is unreachable; the job will be sent when it is "
                  "back.", level="warn")
    db.commit()


FIELDS = {role: field for field, role in ROLES.items()}  # train -> training_file, ...


def _fetch(db: Session, store: ArtifactStore, owner: ApiKey, ids: dict[str, str], folder: Path
           ) -> list[StagedFile]:
    """The named files, owned by the caller and of the right purpose, copied into `folder`."""
    staged = []
    for role, file_id in ids.items():
        param = FIELDS.get(role, f"probe_files.{role.partition(':')[2]}")
        try:
            row: StoredFile = owned_file(db, owner, file_id)
        except ApiError:
            raise ApiError(422, "invalid_file", f"{param}: no such file {file_id!r}", param=param) from None
        if row.purpose != purpose_of(role):
            raise ApiError(422, "invalid_file", f"{param}: file {file_id} was uploaded with purpose "
                           f"{row.purpose!r}; this field needs purpose {purpose_of(role)!r}", param=param)
        name = role.replace(":", "-")
        dest = folder / f"{name}{Path(row.key).suffix}"
        store.download(row.key, dest)
        staged.append(StagedFile(role, row.filename, dest, row.bytes, row.sha256, row.rows, file_id=row.id))
    return staged


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise ApiError(422, "invalid_request", "Idempotency-Key must be 1-255 characters",
                       param="Idempotency-Key")


def _submit(db: Session, settings: Settings, store: ArtifactStore, dispatcher: Dispatcher, owner: ApiKey,
            options: JobOptions, files: list[StagedFile], idempotency_key: str | None) -> Created:
    created = _reserve(db, settings, owner, options, _request_hash(options, files), idempotency_key)
    if created.replayed:
        return created
    _accept(db, store, created.job, files, options)
    _dispatch(db, dispatcher, created.job)
    db.refresh(created.job)
    return created


def create_job_from_files(db: Session, settings: Settings, store: ArtifactStore, dispatcher: Dispatcher,
                          owner: ApiKey, body: Any, idempotency_key: str | None) -> Created:
    """POST /jobs with a JSON body: files by id (api.job_request.JobCreate)."""
    _check_key(idempotency_key)
    options = options_from(settings_of(body))
    check_choices(options, settings)
    folder = _scratch(settings)
    try:
        return _submit(db, settings, store, dispatcher, owner, options,
                       _fetch(db, store, owner, file_ids(body), folder), idempotency_key)
    finally:
        remove(folder)


def _scratch(settings: Settings) -> Path:
    tmp_root = settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root))


def create_job(db: Session, settings: Settings, store: ArtifactStore, dispatcher: Dispatcher, owner: ApiKey,
               train: UploadFile, aux: UploadFile, eval_file: UploadFile | None,
               probe_files: list[UploadFile], config_text: str | None,
               idempotency_key: str | None) -> Created:
    """POST /jobs with a multipart form: the files themselves."""
    _check_key(idempotency_key)
    options = parse_config(config_text)
    check_choices(options, settings)
    folder = _scratch(settings)
    try:
        files = _stage_all(folder, settings, train, aux, eval_file, probe_files)
        return _submit(db, settings, store, dispatcher, owner, options, files, idempotency_key)
    finally:
        remove(folder)
