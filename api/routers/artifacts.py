"""Downloads: the merged model, the adapter and the analysis as tar.gz (streamed, with sha256), the report."""

from __future__ import annotations

import base64
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from api.deps import DbDep, KeyDep, StoreDep
from api.errors import ApiError
from api.routers.jobs import ERRORS, owned_job
from core.service.artifacts import ArtifactNotFound

router = APIRouter(prefix="/jobs", tags=["artifacts"])


def _artifact(db, key, store, job_id: str,
              name: Literal["model", "adapter", "analysis", "report", "screen"]) -> dict:
    job = owned_job(db, key, job_id)
    meta = (job.artifacts or {}).get(name)
    if meta is None:
        hint = ("the job has not succeeded" if job.status != "succeeded" else
                "the job did not ask for the frequency analysis (config frequency_every)" if name == "analysis"
                else "the job ran with screen: false" if name == "screen"
                else f"method {job.config.get('method')!r} produces no {name}")
        raise ApiError(404, "artifact_not_available", f"no {name} for this job: {hint}", param=name)
    return meta


def _headers(meta: dict) -> dict[str, str]:
    b64 = base64.b64encode(bytes.fromhex(meta["sha256"])).decode()
    return {
        "Content-Length": str(meta["bytes"]),
        "Content-Disposition": f'attachment; filename="{meta["filename"]}"',
        "X-Checksum-SHA256": meta["sha256"],
        "Digest": f"sha-256={b64}",  # RFC 3230
        "Repr-Digest": f"sha-256=:{b64}:",  # RFC 9530
        "ETag": f'"{meta["sha256"]}"',
    }


def _stream(db, key, store, job_id: str, name: Literal["model", "adapter", "analysis"]) -> StreamingResponse:
    meta = _artifact(db, key, store, job_id, name)
    db.close()  # a download may take minutes: it must not hold a pooled connection meanwhile
    try:
        chunks = store.iter_chunks(meta["key"])
    except ArtifactNotFound as exc:
        raise ApiError(404, "artifact_not_available", f"the {name} archive is missing from the store",
                       param=name) from exc
    return StreamingResponse(chunks, media_type="application/gzip", headers=_headers(meta))


@router.get("/{job_id}/model", response_class=StreamingResponse, responses={
    200: {"content": {"application/gzip": {}}, "description": "model folder as tar.gz"}, **ERRORS})
def download_model(job_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> StreamingResponse:
    """The merged model: a plain transformers folder (safetensors + tokenizer) in one tar.gz."""
    return _stream(db, key, store, job_id, "model")


@router.get("/{job_id}/adapter", response_class=StreamingResponse, responses={
    200: {"content": {"application/gzip": {}}, "description": "adapter folder as tar.gz"}, **ERRORS})
def download_adapter(job_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> StreamingResponse:
    """The trained adapter (PEFT layout) without the base model."""
    return _stream(db, key, store, job_id, "adapter")


@router.get("/{job_id}/analysis", response_class=StreamingResponse, responses={
    200: {"content": {"application/gzip": {}}, "description": "analysis folder as tar.gz"}, **ERRORS})
def download_analysis(job_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> StreamingResponse:
    """The frequency analysis (frequency.json and the PNG plots), for jobs run with `frequency_every`."""
    return _stream(db, key, store, job_id, "analysis")


def _small_file(db, key, store, job_id: str, name: Literal["report", "screen"], media_type: str,
                disposition: str) -> Response:
    """A small artifact read whole from the store (the archives above are streamed)."""
    meta = _artifact(db, key, store, job_id, name)
    try:
        body = store.get_bytes(meta["key"])
    except ArtifactNotFound as exc:
        raise ApiError(404, "artifact_not_available", f"the {name} file is missing from the store",
                       param=name) from exc
    headers = _headers(meta)
    headers.pop("Content-Length")
    headers["Content-Disposition"] = headers["Content-Disposition"].replace("attachment", disposition)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/{job_id}/report", responses={200: {"content": {"application/json": {}}}, **ERRORS})
def download_report(job_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> Response:
    """metrics.json exactly as the engine wrote it (CACC, ASR per probe, per-epoch, config, versions)."""
    return _small_file(db, key, store, job_id, "report", "application/json", "inline")


@router.get("/{job_id}/screen", responses={200: {"content": {"text/tab-separated-values": {}}}, **ERRORS})
def download_screen(job_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> Response:
    """The training rows the screen removed, as TSV: row (0-based data row), line, rule, feature, score,
    text, label. A header alone when it removed none."""
    return _small_file(db, key, store, job_id, "screen", "text/tab-separated-values; charset=utf-8", "attachment")
