"""Jobs: create, list, retrieve, cancel, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api.deps import DbDep, DispatcherDep, KeyDep, SettingsDep, StoreDep
from api.errors import ApiError, not_found
from api.job_create import create_job
from api.metrics import JOBS_CREATED
from api.schemas import DeletedJob, ErrorResponse, JobList, JobObject, Status, job_object
from core.jobs import lease
from core.jobs.artifacts import job_prefix
from core.jobs.events import add_event
from core.jobs.models import CANCELLED, CANCELLING, TERMINAL, ApiKey, Job

router = APIRouter(prefix="/jobs", tags=["jobs"])

ERRORS = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


def owned_job(db: Session, key: ApiKey, job_id: str) -> Job:
    """A job of the calling key; another key's job is answered exactly like a missing one (404)."""
    job = db.get(Job, job_id)
    if job is None or job.owner_id != key.id:
        raise not_found()
    return job


@router.post("", status_code=201, response_model=JobObject,
             responses={200: {"model": JobObject, "description": "Idempotent replay"},
                        409: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                        422: {"model": ErrorResponse}, **ERRORS})
async def post_job(
    response: Response, db: DbDep, key: KeyDep, settings: SettingsDep, store: StoreDep,
    dispatcher: DispatcherDep,
    train: Annotated[UploadFile, File(description="the untrusted (possibly poisoned) training set")],
    aux: Annotated[UploadFile, File(description="a small trusted clean set (gradient alignment)")],
    eval: Annotated[UploadFile | None, File(description="clean test set for CACC")] = None,
    probe_file: Annotated[list[UploadFile] | None, File(
        description="triggered test sets, repeatable; each named by its file name stem")] = None,
    config: Annotated[str | None, Form(
        description='JSON: {"method", "model", "epochs", "batch_size", "probes", "target_label", '
                    '"seed", "metadata", ... any TrainConfig field}')] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobObject:
    created = await run_in_threadpool(create_job, db, settings, store, dispatcher, key, train, aux, eval,
                                      probe_file or [], config, idempotency_key)
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
def get_job(job_id: str, db: DbDep, key: KeyDep) -> JobObject:
    return job_object(owned_job(db, key, job_id))


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
