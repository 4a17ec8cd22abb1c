"""Epoch checkpoints in the artifact store: pushed after each epoch, pulled by a worker whose disk has none."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.service.archive import sha256_file
from core.service.artifacts import LocalArtifactStore
from worker.checkpoint_sync import CheckpointSync


def pushed_once(tmp_path: Path, files: dict[str, bytes]) -> tuple[LocalArtifactStore, Path, CheckpointSync]:
    """A store, a worker's checkpoint folder holding `files`, and its sync after one push."""
    store = LocalArtifactStore(tmp_path / "store")
    here = tmp_path / "a"
    here.mkdir()
    for name, content in files.items():
        (here / name).write_bytes(content)
    sync = CheckpointSync(store, "job_x", here)
    sync.push()
    return store, here, sync


def test_push_then_pull_on_another_disk_and_stale_files_go(tmp_path: Path) -> None:
    store, here, pusher = pushed_once(tmp_path, {"last.safetensors": b"epoch1", "best-epoch1.safetensors": b"best1"})
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
    store, _, pusher = pushed_once(tmp_path, {"last.safetensors": b"epoch1"})
    store.put_bytes(pusher.key("last.safetensors", pusher.pushed["last.safetensors"]), b"corrupted")
    with pytest.raises(RuntimeError, match="does not match"):
        CheckpointSync(store, "job_x", tmp_path / "b").pull()


def test_a_worker_killed_between_a_file_and_the_manifest_leaves_the_last_complete_set(tmp_path: Path) -> None:
    """The next epoch's file reaches the store but its manifest never does: a reader gets the previous
    epoch's set, whole."""
    store, here, pusher = pushed_once(tmp_path, {"last.safetensors": b"epoch2"})
    (here / "last.safetensors").write_bytes(b"epoch3")
    store.put_file(pusher.key("last.safetensors", sha256_file(here / "last.safetensors")),
                   here / "last.safetensors")  # what push uploads first; then the host is gone

    there = tmp_path / "b"
    assert CheckpointSync(store, "job_x", there).pull() == ["last.safetensors"]
    assert (there / "last.safetensors").read_bytes() == b"epoch2"


def test_a_pull_that_fails_half_way_leaves_no_files_to_resume_from(tmp_path: Path) -> None:
    store, _, pusher = pushed_once(tmp_path, {"best-epoch1.safetensors": b"best1", "last.safetensors": b"epoch1"})
    store.delete(pusher.key("last.safetensors", pusher.pushed["last.safetensors"]))

    there = tmp_path / "b"
    with pytest.raises(KeyError):
        CheckpointSync(store, "job_x", there).pull()
    assert not list(there.glob("*.safetensors"))


def test_a_restarted_worker_on_the_same_disk_replaces_the_stored_versions(tmp_path: Path) -> None:
    """Its disk kept the checkpoints, so nothing is fetched; its next push still drops what the store held."""
    store, here, first = pushed_once(tmp_path, {"last.safetensors": b"epoch1"})
    epoch1 = first.key("last.safetensors", first.pushed["last.safetensors"])

    again = CheckpointSync(store, "job_x", here)
    assert again.pull() == []
    (here / "last.safetensors").write_bytes(b"epoch2")
    again.push()
    assert store.size(epoch1) is None
    assert CheckpointSync(store, "job_x", tmp_path / "b").pull() == ["last.safetensors"]
    assert (tmp_path / "b" / "last.safetensors").read_bytes() == b"epoch2"
