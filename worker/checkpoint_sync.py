"""A job's epoch checkpoints in the artifact store, so any worker resumes it, not only the one whose disk
holds them (a lost host takes its work folder with it).

After each epoch the changed checkpoint files go up under keys that name their content (a file is never
overwritten in place), then a manifest naming the complete set; objects the manifest no longer names are
deleted last. A reader trusts only the manifest, so a worker that dies mid-upload leaves the previous
epoch's set intact, and a pull that fails half way leaves nothing behind to resume from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.service.archive import sha256_file
from core.service.artifacts import ArtifactNotFound, ArtifactStore, job_prefix

log = logging.getLogger("worker.checkpoints")
MANIFEST = "manifest.json"


class CheckpointSync:
    def __init__(self, store: ArtifactStore, job_id: str, folder: Path) -> None:
        self.store = store
        self.prefix = job_prefix(job_id) + "checkpoints/"
        self.folder = folder
        self.pushed: dict[str, str] = {}  # file name -> sha256 already in the store

    def key(self, name: str, digest: str) -> str:
        """Where one version of a checkpoint file lives: the next epoch's version goes to a new key."""
        return f"{self.prefix}{digest[:16]}-{name}"

    def _manifest(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.store.get_bytes(self.prefix + MANIFEST)))
        except ArtifactNotFound:
            return {}

    def push(self) -> None:
        """Upload what changed since the last push, then the manifest, then drop the versions it no longer
        names."""
        files = {p.name: p for p in sorted(self.folder.glob("*.safetensors"))} if self.folder.is_dir() else {}
        if not files:
            return
        current = {name: sha256_file(path) for name, path in files.items()}
        for name, digest in current.items():
            if self.pushed.get(name) != digest:
                self.store.put_file(self.key(name, digest), files[name])
        self.store.put_bytes(self.prefix + MANIFEST, json.dumps(current, sort_keys=True).encode())
        for name, digest in self.pushed.items():
            if current.get(name) != digest:
                self.store.delete(self.key(name, digest))
        self.pushed = current

    def pull(self) -> list[str]:
        """Fetch the last pushed set into an empty local folder; the names fetched (none when the local
        folder already holds checkpoints or the store has none). On any failure the files fetched so far
        are removed, so the job starts over rather than from part of a set."""
        manifest = self._manifest()
        if self.folder.is_dir() and any(self.folder.glob("*.safetensors")):
            self.pushed = manifest  # the store's versions, so the next push replaces them instead of orphaning them
            return []
        if not manifest:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            for name, digest in manifest.items():
                self.store.download(self.key(name, digest), self.folder / name)
                if sha256_file(self.folder / name) != digest:
                    raise RuntimeError(f"checkpoint {name} in the store does not match its manifest")
        except BaseException:
            for name in manifest:
                (self.folder / name).unlink(missing_ok=True)
            raise
        self.pushed = dict(manifest)
        log.info("fetched checkpoints %s from the store", sorted(manifest))
        return sorted(manifest)

    def clear(self) -> None:
        self.store.delete_prefix(self.prefix)
