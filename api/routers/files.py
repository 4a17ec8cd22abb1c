"""Files: upload once, name by id in any number of jobs (shaped like OpenAI's /files)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from api.deps import DbDep, KeyDep, SettingsDep, StoreDep
from api.files import Purpose, delete_file, list_files, owned_file, upload
from api.schemas import DeletedFile, ErrorResponse, FileList, FileObject, file_object

router = APIRouter(prefix="/files", tags=["files"])

ERRORS = {401: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
          503: {"model": ErrorResponse, "description": "the job database is unreachable (database_unavailable)"}}


@router.post("", status_code=201, response_model=FileObject,
             responses={200: {"model": FileObject, "description": "the same content was uploaded before"},
                        400: {"model": ErrorResponse, "description": "a multipart body that cannot be parsed"},
                        413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, **ERRORS})
async def post_file(
    response: Response, db: DbDep, key: KeyDep, settings: SettingsDep, store: StoreDep,
    file: Annotated[UploadFile, File(description="CSV, TSV or JSONL with a header (JSONL: one object per line)")],
    purpose: Annotated[Purpose, Form(description="train (untrusted), aux (trusted clean), eval (clean test "
                                                 "set for CACC) or probe (triggered test set for ASR)")],
    text_column: Annotated[str, Form(description="column holding the text")] = "text",
    label_column: Annotated[str, Form(description="column holding the label")] = "label",
) -> FileObject:
    """Validated on upload (a bad row is answered 422 with its line and field). Uploading the same
    content with the same name and purpose again answers the existing file (200)."""
    row, created = await run_in_threadpool(upload, db, settings, store, key, purpose, file, text_column,
                                           label_column)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/files/{row.id}"
    return file_object(row)


@router.get("", response_model=FileList, responses=ERRORS)
def get_files(db: DbDep, key: KeyDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              after: Annotated[str | None, Query(description="last_id of the previous page")] = None,
              purpose: Annotated[Purpose | None, Query()] = None) -> FileList:
    """Newest first; page with `after` = the previous page's `last_id`."""
    rows, more = list_files(db, key, limit, after, purpose)
    data = [file_object(r) for r in rows]
    return FileList(data=data, has_more=more, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None)


@router.get("/{file_id}", response_model=FileObject, responses=ERRORS)
def get_file(file_id: str, db: DbDep, key: KeyDep) -> FileObject:
    return file_object(owned_file(db, key, file_id))


@router.delete("/{file_id}", response_model=DeletedFile, responses={409: {"model": ErrorResponse}, **ERRORS})
def remove_file(file_id: str, db: DbDep, key: KeyDep, store: StoreDep) -> DeletedFile:
    """Refused (409) while an unfinished job names the file; a job keeps its own copy of its inputs."""
    delete_file(db, store, key, file_id)
    return DeletedFile(id=file_id)
