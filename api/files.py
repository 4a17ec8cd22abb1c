"""Files a job can name by id: validate an upload, store its bytes once per owner and content, find,
list and delete them. A multipart POST /jobs registers its uploads here too."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Literal

from fastapi import UploadFile
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api.errors import ApiError, not_found
from api.uploads import StagedFile, extension, remove, stage
from core.data.table import read_table
from core.errors import MuscleError
from core.service.artifacts import ArtifactStore
from core.service.ids import new_id
from core.service.models import TERMINAL, ApiKey, Job, StoredFile, utcnow
from core.service.settings import Settings
from core.service.userfiles import user_error

Purpose = Literal["train", "aux", "eval", "probe"]
PURPOSES: tuple[str, ...] = Purpose.__args__  # type: ignore[attr-defined]


def purpose_of(role: str) -> str:
    """A job's file role (train, aux, eval, probe:NAME) as a file purpose."""
    return role.split(":", 1)[0]


def describe(staged: StagedFile, purpose: str, text_column: str = "text", label_column: str = "label"
             ) -> tuple[list[str], dict[str, int]]:
    """Read the staged file with the engine's reader (line-numbered errors as 422) and say what it holds:
    its columns and the rows per label. Probe files may leave the label out."""
    try:
        rows = read_table(staged.path, text_column, label_column, role=purpose,
                          require_label=purpose != "probe")
    except MuscleError as exc:
        body = user_error(exc, {str(staged.path): (staged.filename, purpose)})
        raise ApiError(422, str(body.pop("code")), str(body.pop("message")), **{**body, "param": "file"}) from exc
    columns = [text_column, label_column] if rows[0].label is not None else [text_column]
    columns += [c for c in rows[0].extra if c not in columns]
    labels = Counter(r.label for r in rows if r.label is not None)
    return columns, dict(sorted(labels.items()))


def content_key(owner: ApiKey, staged: StagedFile) -> str:
    return f"files/{owner.id}/{staged.sha256}{staged.path.suffix}"


def register(db: Session, store: ArtifactStore, owner: ApiKey, purpose: str, staged: StagedFile,
             columns: list[str], labels: dict[str, int]) -> tuple[StoredFile, bool]:
    """The owner's file with this content and purpose, made if new (bytes stored once per content).
    Returns (file, created). The caller commits."""
    existing = db.scalars(select(StoredFile).where(
        StoredFile.owner_id == owner.id, StoredFile.sha256 == staged.sha256, StoredFile.purpose == purpose,
        StoredFile.filename == staged.filename)).first()
    if existing is not None:
        return existing, False
    key = content_key(owner, staged)
    if store.size(key) is None:
        store.put_file(key, staged.path)
    row = StoredFile(id=new_id("file"), owner_id=owner.id, purpose=purpose, filename=staged.filename,
                     bytes=staged.bytes, sha256=staged.sha256, rows=staged.rows, columns={"names": columns},
                     labels=labels, key=key, created_at=utcnow())
    db.add(row)
    return row, True


def upload(db: Session, settings: Settings, store: ArtifactStore, owner: ApiKey, purpose: str,
           file: UploadFile, text_column: str, label_column: str) -> tuple[StoredFile, bool]:
    if purpose not in PURPOSES:
        raise ApiError(422, "invalid_request", f"purpose must be one of {', '.join(PURPOSES)}", param="purpose")
    tmp_root = settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="file-", dir=tmp_root))
    try:
        staged = stage(purpose, file.file, file.filename, folder / f"upload{extension('file', file.filename)}",
                       settings.max_rows)
        columns, labels = describe(staged, purpose, text_column, label_column)
        row, created = register(db, store, owner, purpose, staged, columns, labels)
        db.commit()
        return row, created
    finally:
        remove(folder)


def owned_file(db: Session, owner: ApiKey, file_id: str) -> StoredFile:
    """A file of the calling key; another key's file is answered like a missing one (404)."""
    row = db.get(StoredFile, file_id)
    if row is None or row.owner_id != owner.id:
        raise not_found("file")
    return row


def list_files(db: Session, owner: ApiKey, limit: int, after: str | None, purpose: str | None
               ) -> tuple[list[StoredFile], bool]:
    query = select(StoredFile).where(StoredFile.owner_id == owner.id)
    if purpose:
        query = query.where(StoredFile.purpose == purpose)
    if after:
        cursor = owned_file(db, owner, after)
        query = query.where(or_(StoredFile.created_at < cursor.created_at,
                                and_(StoredFile.created_at == cursor.created_at, StoredFile.id < cursor.id)))
    rows = db.scalars(query.order_by(StoredFile.created_at.desc(), StoredFile.id.desc()).limit(limit + 1)).all()
    return list(rows[:limit]), len(rows) > limit


def jobs_using(db: Session, owner: ApiKey, file_id: str) -> list[str]:
    """Unfinished jobs of the owner that name this file."""
    jobs = db.scalars(select(Job).where(Job.owner_id == owner.id, Job.status.not_in(TERMINAL))).all()
    return [j.id for j in jobs
            if any(f.get("file_id") == file_id for f in (j.inputs or {}).get("files", {}).values())]


def delete_file(db: Session, store: ArtifactStore, owner: ApiKey, file_id: str) -> None:
    row = owned_file(db, owner, file_id)
    if users := jobs_using(db, owner, file_id):
        raise ApiError(409, "file_in_use", f"file {file_id} is used by unfinished job(s) {', '.join(users)}; "
                       "delete it once they have ended", param="file_id")
    shared = db.scalars(select(StoredFile).where(StoredFile.key == row.key, StoredFile.id != row.id)).first()
    db.delete(row)
    db.commit()
    if shared is None:
        store.delete(row.key)
