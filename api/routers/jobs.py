"""Jobs: create, list, retrieve, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUpload

from api.deps import (
    CredentialsDep,
    DbDep,
    DispatcherDep,
    KeyDep,
    SettingsDep,
    StoreDep,
    invalid_key,
    presented_key,
    read_session,
)
from api.errors import ApiError, not_found
from api.job_create import Created, create_job, create_job_from_files
from api.job_request import parse_body
from api.metrics import JOBS_CREATED
from api.queue import Dispatcher
from api.schemas import DeletedJob, ErrorResponse, JobList, JobObject, Status, job_object
from core.service import lease
from core.service.artifacts import ArtifactStore, job_prefix
from core.service.auth import active_key, digest_matches, key_digest
from core.service.db import read_once_more
from core.service.events import add_event
from core.service.models import CANCELLED, CANCELLING, TERMINAL, ApiKey, Job
from core.service.settings import Settings

router = APIRouter(prefix="/jobs", tags=["jobs"])

ERRORS = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
          503: {"model": ErrorResponse, "description": "the job database is unreachable (database_unavailable)"}}


def owned_job(db: Session, key: ApiKey, job_id: str) -> Job:
    """A job of the calling key; another key's job is answered exactly like a missing one (404)."""
    job = db.get(Job, job_id)
    if job is None or job.owner_id != key.id:
        raise not_found()
    return job


JOB_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/JobUpload"}}}}}


async def _create(request: Request, db: Session, key: ApiKey, settings: Settings, store: ArtifactStore,
                  dispatcher: Dispatcher, idempotency_key: str | None) -> Created:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            payload = await request.json()
        except ValueError as exc:
            raise ApiError(422, "invalid_request", f"the body is not valid JSON: {exc}", param="body") from exc
        body = parse_body(payload)
        return await run_in_threadpool(create_job_from_files, db, settings, store, dispatcher, key, body,
                                       idempotency_key)
    if kind != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send application/json (files by id, see POST /files) "
                       "or multipart/form-data (the files themselves)")
    async with request.form() as form:
        uploads = {name: form.get(name) for name in ("train", "aux", "eval")}
        for name in ("train", "aux"):
            if not isinstance(uploads[name], StarletteUpload):
                raise ApiError(422, "invalid_request", f"{name}: Field required (a file)", param=name)
        if uploads["eval"] is not None and not isinstance(uploads["eval"], StarletteUpload):
            raise ApiError(422, "invalid_request", "eval: must be a file", param="eval")
        probes = form.getlist("probe_file")
        if not all(isinstance(p, StarletteUpload) for p in probes):
            raise ApiError(422, "invalid_request", "probe_file: must be files", param="probe_file")
        config = form.get("config")
        if config is not None and not isinstance(config, str):
            raise ApiError(422, "invalid_request", "config: must be a JSON string, not a file", param="config")
        return await run_in_threadpool(create_job, db, settings, store, dispatcher, key, uploads["train"],
                                       uploads["aux"], uploads["eval"], probes, config, idempotency_key)


@router.post("", status_code=201, response_model=JobObject, openapi_extra=JOB_BODY,
             responses={200: {"model": JobObject, "description": "Idempotent replay"},
                        400: {"model": ErrorResponse, "description": "a multipart body that cannot be parsed"},
                        409: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                        429: {"model": ErrorResponse, "description": "too many jobs of this key are waiting"},
                        415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, **ERRORS})
async def post_job(
    request: Request, response: Response, db: DbDep, key: KeyDep, settings: SettingsDep, store: StoreDep,
    dispatcher: DispatcherDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobObject:
    """Create a job. JSON body (`JobCreate`): files by id from POST /files and the training settings at
    the top level. Multipart form (`JobUpload`): the files themselves, registered under /files as well,
    and the settings as a JSON string in `config`."""
    created = await _create(request, db, key, settings, store, dispatcher, idempotency_key)
    if created.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    else:
        JOBS_CREATED.inc()
    response.headers["Location"] = f"/jobs/{created.job.id}"
    return job_object(created.job)


@router.get("", response_model=JobList, responses=ERRORS)
def list_jobs(db: DbDep, key: KeyDep,
              limit: Annotated[int, Query(ge=1, le=100)] = 20,
              after: Annotated[str | None, Query(description="last_id of the previous page")] = None,
              status: Annotated[list[Status] | None, Query(description="filter; repeatable")] = None,
              ) -> JobList:
    """Newest first; page with `after` = the previous page's `last_id`."""
    query = select(Job).where(Job.owner_id == key.id)
    if status:
        query = query.where(Job.status.in_(status))
    if after:
        cursor = owned_job(db, key, after)
        query = query.where(or_(Job.created_at < cursor.created_at,
                                and_(Job.created_at == cursor.created_at, Job.id < cursor.id)))
    rows = db.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).all()
    data = [job_object(j) for j in rows[:limit]]
    return JobList(data=data, has_more=len(rows) > limit, first_id=data[0].id if data else None,
                   last_id=data[-1].id if data else None)


@router.get("/{job_id}", response_model=JobObject, responses=ERRORS)
async def get_job(job_id: str, request: Request, creds: CredentialsDep) -> Response:
    # The most frequent request: the key check, the read and the serialisation in one trip to a worker
    # thread (DbDep and KeyDep would make four trips), and the object serialised once, here.
    body = await run_in_threadpool(_job_json, request.app.state.settings.database_url, creds, job_id)
    return Response(body, media_type="application/json")


def _job_json(database_url: str, creds: HTTPAuthorizationCredentials | None, job_id: str) -> str:
    # The key check and the read in one statement outside a transaction: one database round trip, where
    # a session's BEGIN, key query, COMMIT, BEGIN, job query and ROLLBACK took six, each a wake-up of a
    # thread and a database process on a busy machine.
    digest = key_digest(presented_key(creds))
    if digest is None:
        raise invalid_key()

    def read() -> str:
        with read_session(database_url) as db:  # the connection goes back before the answer is sent
            row = db.execute(
                select(ApiKey.key_hash, Job).select_from(ApiKey)
                .outerjoin(Job, and_(Job.id == job_id, Job.owner_id == ApiKey.id))
                .where(active_key(digest))).first()
            if row is None or not digest_matches(row.key_hash, digest):
                raise invalid_key()
            if row.Job is None:  # missing, or another key's: answered alike
                raise not_found()
            return job_object(row.Job).model_dump_json()

    return read_once_more(read)


@router.post("/{job_id}/cancel", response_model=JobObject,
             responses={409: {"model": ErrorResponse}, **ERRORS})
def cancel_job(job_id: str, db: DbDep, key: KeyDep) -> JobObject:
    """Queued jobs end at once (cancelled); running ones go to `cancelling` and stop within one
    training step. Cancelling a cancelled/cancelling job is a no-op."""
    job = owned_job(db, key, job_id)
    if job.status in (CANCELLED, CANCELLING):
        return job_object(job)
    if lease.cancel(db, job.id):
        db.commit()
        db.refresh(job)
        add_event(db, job.id, "job.cancel_requested" if job.status == CANCELLING else "job.cancelled",
                  "Cancel requested; the job stops after the current training step."
                  if job.status == CANCELLING else "Job cancelled before it started.")
        db.commit()
        return job_object(job)
    db.refresh(job)
    if job.status in TERMINAL and job.status != CANCELLED:
        raise ApiError(409, "job_not_cancellable", f"the job already {job.status}")
    return job_object(job)


@router.delete("/{job_id}", response_model=DeletedJob, responses={409: {"model": ErrorResponse}, **ERRORS})
def delete_job(job_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> DeletedJob:
    """Only terminal jobs; removes the job, its events, inputs and artifacts."""
    job = owned_job(db, key, job_id)
    if job.status not in TERMINAL:
        raise ApiError(409, "job_not_terminal", f"the job is {job.status}; cancel it first and delete it "
                       "once it is cancelled")
    store.delete_prefix(job_prefix(job.id))
    db.delete(job)
    db.commit()
    return DeletedJob(id=job_id)
