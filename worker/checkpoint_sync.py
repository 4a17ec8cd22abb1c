"""A job's epoch checkpoints in the artifact store, so any worker resumes it, not only the one whose disk
holds them (a lost host takes its work folder with it).

After each epoch the new checkpoint files go up, then a manifest naming the complete set; files the
manifest no longer names are deleted last. A reader trusts only the manifest, so a worker that dies
mid-upload leaves the previous epoch's set intact.
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

    def _manifest(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.store.get_bytes(self.prefix + MANIFEST)))
        except ArtifactNotFound:
            return {}

    def push(self) -> None:
        """Upload what changed since the last push, then the manifest, then drop files no longer named."""
        files = {p.name: p for p in sorted(self.folder.glob("*.safetensors"))} if self.folder.is_dir() else {}
        if not files:
            return
        current = {name: sha256_file(path) for name, path in files.items()}
        for name, digest in current.items():
            if self.pushed.get(name) != digest:
                self.store.put_file(self.prefix + name, files[name])
        self.store.put_bytes(self.prefix + MANIFEST, json.dumps(current, sort_keys=True).encode())
        for name in set(self.pushed) - set(current):
            self.store.delete(self.prefix + name)
        self.pushed = current

    def pull(self) -> list[str]:
        """Fetch the last pushed set into an empty local folder; the names fetched (none when the local
        folder already holds checkpoints or the store has none)."""
        if self.folder.is_dir() and any(self.folder.glob("*.safetensors")):
            return []
        manifest = self._manifest()
        if not manifest:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, digest in manifest.items():
            self.store.download(self.prefix + name, self.folder / name)
            if sha256_file(self.folder / name) != digest:
                raise RuntimeError(f"checkpoint {name} in the store does not match its manifest")
        self.pushed = dict(manifest)
        log.info("fetched checkpoints %s from the store", sorted(manifest))
        return sorted(manifest)

    def clear(self) -> None:
        self.store.delete_prefix(self.prefix)
