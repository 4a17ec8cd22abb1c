"""Epoch checkpoints in the artifact store: pushed after each epoch, pulled by a worker whose disk has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.service.artifacts import LocalArtifactStore
from worker.checkpoint_sync import CheckpointSync


def test_push_then_pull_on_another_disk_and_stale_files_go(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    here = tmp_path / "a" / "checkpoints"
    here.mkdir(parents=True)
    (here / "last.safetensors").write_bytes(b"epoch1")
    (here / "best-epoch1.safetensors").write_bytes(b"best1")
    pusher = CheckpointSync(store, "job_x", here)
    pusher.push()
    (here / "best-epoch1.safetensors").unlink()  # epoch 2 is better: the engine replaced the best file
    (here / "best-epoch2.safetensors").write_bytes(b"best2")
    (here / "last.safetensors").write_bytes(b"epoch2")
    pusher.push()
    assert store.size("jobs/job_x/checkpoints/best-epoch1.safetensors") is None

    there = tmp_path / "b" / "checkpoints"
    assert CheckpointSync(store, "job_x", there).pull() == ["best-epoch2.safetensors", "last.safetensors"]
    assert (there / "last.safetensors").read_bytes() == b"epoch2"
    assert CheckpointSync(store, "job_x", there).pull() == []  # a disk that has them keeps its own
    assert CheckpointSync(store, "job_y", tmp_path / "c").pull() == []  # nothing stored: start over
    CheckpointSync(store, "job_x", there).clear()
    assert CheckpointSync(store, "job_x", tmp_path / "d").pull() == []


def test_a_file_that_does_not_match_the_manifest_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    here = tmp_path / "a"
    here.mkdir()
    (here / "last.safetensors").write_bytes(b"epoch1")
    CheckpointSync(store, "job_x", here).push()
    store.put_bytes("jobs/job_x/checkpoints/last.safetensors", b"half-written")
    with pytest.raises(RuntimeError, match="does not match"):
        CheckpointSync(store, "job_x", tmp_path / "b").pull()
