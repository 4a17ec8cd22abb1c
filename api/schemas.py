"""Response models (OpenAPI at /docs). Shaped like OpenAI's fine_tuning.job where it fits."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.service.contract import Progress, Status
from core.service.models import TERMINAL, Job, JobEvent, StoredFile


def ts(value: datetime | None) -> int | None:
    """Unix seconds, as OpenAI's objects carry them."""
    return None if value is None else int(value.timestamp())


class ErrorInfo(BaseModel):
    code: str
    message: str
    param: str | None = None
    file: str | None = None
    line: int | None = None
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class FileInfo(BaseModel):
    filename: str
    bytes: int
    sha256: str
    rows: int | None = None
    file_id: str | None = Field(None, description="the file's id under /files")


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    purpose: Literal["train", "aux", "eval", "probe"]
    filename: str = Field(description="as uploaded")
    bytes: int
    sha256: str
    rows: int = Field(description="data rows (header excluded)")
    columns: list[str] = Field(description="text column, label column (when present), then the others")
    labels: dict[str, int] = Field(description="rows per label")
    created_at: int


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class DeletedFile(BaseModel):
    id: str
    object: Literal["file.deleted"] = "file.deleted"
    deleted: bool = True


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    cacc: float | None = None
    asr: dict[str, float] = Field(default_factory=dict)
    best_epoch: int | None = None
    per_epoch: list[dict[str, Any]] = Field(default_factory=list)


class ArtifactInfo(BaseModel):
    url: str
    filename: str
    bytes: int
    sha256: str


class JobObject(BaseModel):
    id: str
    object: Literal["job"] = "job"
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None
    status: Status
    terminal: bool
    model: str
    method: str
    seed: int
    config: dict[str, Any] = Field(description="the fully resolved training configuration")
    files: dict[str, FileInfo] = Field(description="by role: train, aux, eval, probe:NAME")
    probes: list[str] = Field(default_factory=list, description="built-in probes (triggers)")
    metadata: dict[str, str] = Field(default_factory=dict)
    validation: dict[str, Any] | None = None
    progress: Progress | None = None
    metrics: Metrics | None = None
    artifacts: dict[str, ArtifactInfo] = Field(default_factory=dict,
                                               description="model, adapter, report when available")
    error: ErrorInfo | None = None
    attempts: int = 0
    cancel_requested_at: int | None = None


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class EventObject(BaseModel):
    id: int
    object: Literal["job.event"] = "job.event"
    job_id: str
    created_at: int
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = None


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventObject]
    has_more: bool
    first_id: int | None = None
    last_id: int | None = None


class DeletedJob(BaseModel):
    id: str
    object: Literal["job.deleted"] = "job.deleted"
    deleted: bool = True


def job_object(job: Job) -> JobObject:
    config = job.config or {}
    inputs = job.inputs or {}
    progress = Progress(**job.progress) if job.progress else None
    eta = progress.eta_seconds if progress and job.status not in TERMINAL else None
    artifacts = {
        name: ArtifactInfo(url=f"/jobs/{job.id}/{name}", filename=a["filename"], bytes=a["bytes"],
                           sha256=a["sha256"])
        for name, a in (job.artifacts or {}).items()
    }
    return JobObject(
        id=job.id,
        created_at=ts(job.created_at) or 0,
        started_at=ts(job.started_at),
        finished_at=ts(job.finished_at),
        estimated_finish=int(job.updated_at.timestamp() + eta) if eta is not None else None,
        status=job.status,  # type: ignore[arg-type]
        terminal=job.status in TERMINAL,
        model=str(config.get("model", "")),
        method=str(config.get("method", "")),
        seed=int(config.get("seed", 0)),
        config=config,
        files={role: FileInfo(**{k: f.get(k) for k in ("filename", "bytes", "sha256", "rows", "file_id")})
               for role, f in inputs.get("files", {}).items()},
        probes=list(inputs.get("probes", [])),
        metadata=job.job_metadata or {},
        validation=job.validation,
        progress=progress,
        metrics=Metrics(**job.metrics) if job.metrics else None,
        artifacts=artifacts,
        error=ErrorInfo(**job.error) if job.error else None,
        attempts=job.attempts,
        cancel_requested_at=ts(job.cancel_requested_at),
    )


def event_object(event: JobEvent) -> EventObject:
    return EventObject(id=event.id, job_id=event.job_id, created_at=ts(event.created_at) or 0,
                       level=event.level, type=event.type, message=event.message, data=event.data)


def file_object(row: StoredFile) -> FileObject:
    return FileObject(id=row.id, purpose=row.purpose, filename=row.filename,  # type: ignore[arg-type]
                      bytes=row.bytes, sha256=row.sha256, rows=row.rows,
                      columns=list((row.columns or {}).get("names", [])), labels=row.labels or {},
                      created_at=ts(row.created_at) or 0)
