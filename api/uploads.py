"""Staging uploaded files on disk: names, extensions, sha256, row counts and the row limit."""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

from api.errors import ApiError

EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json")  # the engine picks the format by extension
PROBE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class StagedFile:
    role: str  # train | aux | eval | probe:NAME
    filename: str  # as the client named it
    path: Path
    bytes: int
    sha256: str
    rows: int
    file_id: str | None = None  # its id under /files, once registered

    def info(self, key: str) -> dict[str, object]:
        return {"filename": self.filename, "bytes": self.bytes, "sha256": self.sha256, "rows": self.rows,
                "key": key, "stored_as": self.path.name, "file_id": self.file_id}


def extension(role: str, filename: str | None) -> str:
    suffix = PurePath(filename or "").suffix.lower()
    if suffix not in EXTENSIONS:
        raise ApiError(422, "invalid_file", f"{role} file {filename!r}: unsupported type; use one of "
                       f"{', '.join(EXTENSIONS)}", param=role, file=filename)
    return suffix


def probe_name(filename: str | None) -> str:
    name = PurePath(filename or "").stem
    if not PROBE_NAME.match(name):
        raise ApiError(422, "invalid_file", f"probe file {filename!r}: its name (without extension) "
                       "names the probe and must be 1-64 letters, digits, '_', '-' or '.'",
                       param="probe_file", file=filename)
    return name


def count_rows(path: Path) -> int:
    """Data rows (header excluded for CSV/TSV); cheap, run before the engine's full validation."""
    if path.suffix in (".jsonl", ".json"):
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        try:
            return max(sum(1 for _ in reader) - 1, 0)
        except csv.Error:
            return 0  # malformed: the engine's validation names the line


def stage(role: str, source: BinaryIO, filename: str | None, dest: Path, max_rows: int) -> StagedFile:
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    rows = count_rows(dest)
    if rows > max_rows:
        raise ApiError(422, "too_many_rows", f"{role} file {filename!r} has {rows} rows; the limit is "
                       f"{max_rows} (MUSCLE_MAX_ROWS)", param=role, file=filename)
    return StagedFile(role, filename or dest.name, dest, size, digest.hexdigest(), rows)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
