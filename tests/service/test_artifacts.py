"""The local and the S3 artifact store behave the same (S3 against a real moto_server)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from core.service.archive import make_tarball
from core.service.artifacts import ArtifactNotFound, ArtifactStore, LocalArtifactStore, S3ArtifactStore

pytestmark = pytest.mark.service  # S3 half


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3ArtifactStore(f"s3://{bucket}/some/prefix", endpoint_url=endpoint)


def test_roundtrip(store: ArtifactStore, tmp_path: Path) -> None:
    store.check()
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over boto3's multipart threshold
    store.put_file("jobs/job_a/model.tar.gz", big)
    store.put_bytes("jobs/job_a/metrics.json", b'{"cacc": 1.0}')
    store.put_bytes("jobs/job_b/metrics.json", b"{}")

    assert store.size("jobs/job_a/model.tar.gz") == big.stat().st_size
    assert store.size("jobs/job_a/missing") is None
    assert store.get_bytes("jobs/job_a/metrics.json") == b'{"cacc": 1.0}'
    streamed = hashlib.sha256(b"".join(store.iter_chunks("jobs/job_a/model.tar.gz", 1 << 20)))
    assert streamed.hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()
    store.download("jobs/job_a/model.tar.gz", tmp_path / "dl" / "copy.bin")
    assert (tmp_path / "dl" / "copy.bin").read_bytes() == big.read_bytes()

    with pytest.raises(ArtifactNotFound):
        store.get_bytes("jobs/job_a/nope")
    with pytest.raises(ArtifactNotFound):
        store.iter_chunks("jobs/job_a/nope")

    store.delete("jobs/job_a/metrics.json")
    assert store.size("jobs/job_a/metrics.json") is None
    assert store.delete_prefix("jobs/job_a/") == 1
    assert store.size("jobs/job_a/model.tar.gz") is None
    assert store.get_bytes("jobs/job_b/metrics.json") == b"{}"  # other jobs untouched


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "jobs/../../x", "jobs//x", ""])
def test_keys_cannot_leave_the_store(key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalArtifactStore(tmp_path).put_bytes(key, b"x")


def test_tarball_is_reproducible(tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"\x00" * 100)
    sha1, size1 = make_tarball(src, tmp_path / "a.tar.gz", "model")
    os.utime(src / "config.json", (1, 1))  # mtimes do not matter
    sha2, size2 = make_tarball(src, tmp_path / "b.tar.gz", "model")
    assert (sha1, size1) == (sha2, size2)
    assert sha1 == hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model", "model/config.json", "model/sub", "model/sub/w.bin"]
