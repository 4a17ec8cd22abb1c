"""Folder -> one reproducible .tar.gz (sorted names, zero mtimes and owners) and its sha256."""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def make_tarball(src: Path, dest: Path, arcname: str) -> tuple[str, int]:
    """Pack `src` as `arcname/...` into `dest`; return (sha256 hex, size in bytes)."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=arcname, recursive=False, filter=_normalise)
        for path in sorted(src.rglob("*")):
            if path.is_symlink():
                continue  # engine output has none; never follow links out of the folder
            tar.add(path, arcname=f"{arcname}/{path.relative_to(src).as_posix()}", recursive=False,
                    filter=_normalise)
    return sha256_file(dest), dest.stat().st_size
