"""Epoch checkpoints in the artifact store: pushed after each epoch, pulled by a worker whose disk has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.service.archive import sha256_file
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
    epoch1 = {name: pusher.key(name, digest) for name, digest in pusher.pushed.items()}
    (here / "best-epoch1.safetensors").unlink()  # epoch 2 is better: the engine replaced the best file
    (here / "best-epoch2.safetensors").write_bytes(b"best2")
    (here / "last.safetensors").write_bytes(b"epoch2")
    pusher.push()
    assert all(store.size(key) is None for key in epoch1.values())  # epoch 1's versions are gone

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
    pusher = CheckpointSync(store, "job_x", here)
    pusher.push()
    store.put_bytes(pusher.key("last.safetensors", pusher.pushed["last.safetensors"]), b"corrupted")
    with pytest.raises(RuntimeError, match="does not match"):
        CheckpointSync(store, "job_x", tmp_path / "b").pull()


def test_a_worker_killed_between_a_file_and_the_manifest_leaves_the_last_complete_set(tmp_path: Path) -> None:
    """The next epoch's file reaches the store but its manifest never does: a reader gets the previous
    epoch's set, whole."""
    store = LocalArtifactStore(tmp_path / "store")
    here = tmp_path / "a"
    here.mkdir()
    (here / "last.safetensors").write_bytes(b"epoch2")
    pusher = CheckpointSync(store, "job_x", here)
    pusher.push()
    (here / "last.safetensors").write_bytes(b"epoch3")
    store.put_file(pusher.key("last.safetensors", sha256_file(here / "last.safetensors")),
                   here / "last.safetensors")  # what push uploads first; then the host is gone

    there = tmp_path / "b"
    assert CheckpointSync(store, "job_x", there).pull() == ["last.safetensors"]
    assert (there / "last.safetensors").read_bytes() == b"epoch2"


def test_a_pull_that_fails_half_way_leaves_no_files_to_resume_from(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    here = tmp_path / "a"
    here.mkdir()
    (here / "best-epoch1.safetensors").write_bytes(b"best1")
    (here / "last.safetensors").write_bytes(b"epoch1")
    pusher = CheckpointSync(store, "job_x", here)
    pusher.push()
    store.delete(pusher.key("last.safetensors", pusher.pushed["last.safetensors"]))

    there = tmp_path / "b"
    with pytest.raises(KeyError):
        CheckpointSync(store, "job_x", there).pull()
    assert not list(there.glob("*.safetensors"))


def test_a_restarted_worker_on_the_same_disk_replaces_the_stored_versions(tmp_path: Path) -> None:
    """Its disk kept the checkpoints, so nothing is fetched; its next push still drops what the store held."""
    store = LocalArtifactStore(tmp_path / "store")
    here = tmp_path / "a"
    here.mkdir()
    (here / "last.safetensors").write_bytes(b"epoch1")
    first = CheckpointSync(store, "job_x", here)
    first.push()
    epoch1 = first.key("last.safetensors", first.pushed["last.safetensors"])

    again = CheckpointSync(store, "job_x", here)
    assert again.pull() == []
    (here / "last.safetensors").write_bytes(b"epoch2")
    again.push()
    assert store.size(epoch1) is None
    assert CheckpointSync(store, "job_x", tmp_path / "b").pull() == ["last.safetensors"]
    assert (tmp_path / "b" / "last.safetensors").read_bytes() == b"epoch2"
