"""Faults injected into real processes (issue 15): the worker killed at a known stage, Redis restarted
mid-run without persistence, the API killed mid-upload and mid-download, the database cut off, a full
artifact disk. Every accepted job must end succeeded, failed with a reason, or cancelled."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import free_port, unavailable
from tests.service.stack import Stack, own_stack
from tests.service.test_e2e import config, post

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.faults]

ROLES = ("train", "aux", "eval")


def kinds(stack: Stack, job_id: str) -> list[str]:
    return [e["type"] for e in stack.events(job_id)]


def assert_downloads_match(stack: Stack, job: dict[str, Any]) -> None:
    """Every artifact the job lists downloads whole, with the recorded size and sha256."""
    with stack.client() as c:
        for name, meta in job["artifacts"].items():
            r = c.get(f"/jobs/{job['id']}/{name}")
            assert r.status_code == 200, (name, r.text)
            assert len(r.content) == meta["bytes"] and hashlib.sha256(r.content).hexdigest() == meta["sha256"]


# -- the worker killed at a known stage ------------------------------------------------------------
@pytest.mark.parametrize("point", ["screening", "exporting", "upload"])
def test_kill_9_worker_at_a_stage_then_the_job_resumes_once(stack: Stack, dataset: dict[str, Path],
                                                            tiny_model: Path, point: str) -> None:
    """kill -9 while the worker is in the screen stage, exporting the model, or half way through
    uploading the artifacts (the model archive stored, the rest not): the lease expires, the job is
    re-queued once and a new worker finishes it; never two owners at once, every artifact whole."""
    stack.kill_worker(15)  # the shared worker, gracefully: it is idle
    stack.start_worker(hang_at=point)
    try:
        job_id = post(stack, dataset, config(tiny_model, epochs=2), ROLES)
        stack.wait_marker(point)
        with stack.client() as c:
            before = c.get(f"/jobs/{job_id}").json()
        stack.kill_worker()  # SIGKILL at that point
    finally:
        if stack.worker is not None and stack.worker.poll() is None:
            stack.kill_worker()
        stack.start_worker()
    job = stack.wait(job_id)
    assert before["status"] in ("running", "evaluating") and before["attempts"] == 1
    assert job["status"] == "succeeded", (job["error"], stack.log())
    assert job["attempts"] == 2
    events = stack.events(job_id)
    types = [e["type"] for e in events]
    assert types.count("job.requeued") == 1 and types.count("job.succeeded") == 1
    requeued = types.index("job.requeued")
    second = [i for i, t in enumerate(types) if t in ("job.started", "job.resumed")]
    assert len(second) == 2 and second[0] < requeued < second[1]  # the second attempt began after the first ended
    assert [row["epoch"] for row in job["metrics"]["per_epoch"]] == [1, 2]
    if point != "screening":  # the checkpoints of both epochs were there: nothing trained twice
        assert types[second[1]] == "job.resumed" and types.count("epoch") == 2
    assert_downloads_match(stack, job)


# -- Redis restarted mid-run, without persistence --------------------------------------------------
def start_redis(folder: Path, port: int) -> subprocess.Popen:
    try:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
    except FileNotFoundError:
        unavailable("redis-server (to restart a Redis of the test's own)")
    import redis

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if redis.Redis(port=port, socket_connect_timeout=0.5).ping():
                return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("redis-server did not start")


def test_redis_restarted_mid_run_loses_its_messages_and_every_job_still_ends(
        tmp_path: Path, postgres_admin: str, s3_endpoint: str, dataset: dict[str, Path],
        tiny_model: Path) -> None:
    """Redis (no persistence) dies while job A trains and job B waits in the queue; job C is submitted
    while it is down; Redis comes back empty. A finishes, B (its message gone) and C are re-sent by the
    workers' sweep, D submitted after the restart runs: all four succeed, each exactly once."""
    port = free_port()
    redis_proc = start_redis(tmp_path, port)
    try:
        with own_stack(tmp_path, postgres_admin, f"redis://127.0.0.1:{port}/0", s3_endpoint,
                       MUSCLE_REDISPATCH_AFTER_SECONDS="6", MUSCLE_DISPATCH_GRACE_SECONDS="1") as s:
            a = post(s, dataset, config(tiny_model, epochs=6), ROLES)
            s.wait_event(a, lambda e: e["type"] == "epoch")
            b = post(s, dataset, config(tiny_model, epochs=1), ("train", "aux"))
            redis_proc.kill()
            redis_proc.wait(10)
            c = post(s, dataset, config(tiny_model, epochs=1), ("train", "aux"))  # accepted, sent later
            time.sleep(2)
            redis_proc = start_redis(tmp_path, port)
            jobs = {name: s.wait(job_id, timeout=240) for name, job_id in (("a", a), ("b", b), ("c", c))}
            d = post(s, dataset, config(tiny_model, epochs=1), ("train", "aux"))
            jobs["d"] = s.wait(d, timeout=120)
            # B's message died with Redis: a sweep re-sent it (alone, or with C when both fell due together)
            assert re.search(rf"sweep: dispatch=\[[^\]]*'{b}'", s.log(tail=10**6)), s.log()
            for name, job in jobs.items():
                assert job["status"] == "succeeded", (name, job["error"], s.log())
                assert job["attempts"] == 1, name  # never run twice
                assert kinds(s, job["id"]).count("job.started") == 1, name
    finally:
        redis_proc.kill()
        redis_proc.wait(10)


# -- the API killed mid-upload and mid-download -----------------------------------------------------
def multipart(boundary: str, rows: int) -> tuple[bytes, bytes, bytes]:
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\ntrain\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="interrupted.tsv"\r\n'
            "Content-Type: text/tab-separated-values\r\n\r\ntext\tlabel\n").encode()
    body = "".join(f"the movie was good number {i}\t{i % 2}\n" for i in range(rows)).encode()
    return head, body, f"\r\n--{boundary}--\r\n".encode()


def big_artifact(stack: Stack, job_id: str, size: int) -> dict[str, Any]:
    import boto3
    from sqlalchemy import update

    from core.service.artifacts import job_prefix
    from core.service.db import session_scope
    from core.service.models import Job

    data = os.urandom(size)
    key = job_prefix(job_id) + "big-model.tar.gz"
    bucket, prefix = stack.env["MUSCLE_ARTIFACTS"].removeprefix("s3://").split("/", 1)
    boto3.client("s3", endpoint_url=stack.env["MUSCLE_S3_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").put_object(
        Bucket=bucket, Key=f"{prefix}/{key}", Body=data)
    meta = {"key": key, "filename": f"{job_id}-model.tar.gz", "bytes": size,
            "sha256": hashlib.sha256(data).hexdigest()}
    with session_scope(stack.env["MUSCLE_DATABASE_URL"]) as db:
        job = db.get(Job, job_id)
        assert job is not None
        db.execute(update(Job).where(Job.id == job_id).values(artifacts={**job.artifacts, "model": meta}))
    return meta


def test_api_killed_mid_upload_and_mid_download(stack: Stack, dataset: dict[str, Path], tiny_model: Path) -> None:
    """kill -9 of the API while a file is being uploaded: the client gets an error and, after the
    restart, no half-registered file exists. kill -9 while a model is being downloaded: the client gets
    an error or the whole file (never a short file taken for whole), and downloads whole after the restart."""
    job = stack.wait(post(stack, dataset, config(tiny_model, epochs=1), ("train", "aux")))
    assert job["status"] == "succeeded", (job["error"], stack.log())
    with stack.client() as c:
        files_before = c.get("/files", params={"limit": 100}).json()["data"]

    boundary = uuid.uuid4().hex
    head, body, tail = multipart(boundary, 60_000)

    def slow_body() -> Iterator[bytes]:
        yield head
        for i, start in enumerate(range(0, len(body), 64 * 1024)):
            if i == 4:
                stack.kill_api()  # the server dies with the body half sent
            yield body[start:start + 64 * 1024]
            time.sleep(0.02)
        yield tail

    with stack.client() as c, pytest.raises(httpx.TransportError):
        c.post("/files", content=slow_body(),
               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    stack.start_api()
    with stack.client() as c:
        files_after = c.get("/files", params={"limit": 100}).json()["data"]
    assert "interrupted.tsv" not in {f["filename"] for f in files_after}
    assert [f["id"] for f in files_after] == [f["id"] for f in files_before]
    staging = stack.folder / "data" / "tmp"
    assert not staging.is_dir() or not list(staging.iterdir())

    # A model archive larger than the sockets' buffers, so that the kill can cut it short: stored
    # beside the job's real archive and named in its row, the way the worker names one.
    meta = big_artifact(stack, job["id"], 8 * 1024 * 1024)
    job["artifacts"]["model"] = meta
    outcome = "complete"
    received = bytearray()
    # A small receive buffer keeps most of the archive in the server's hands when it dies.
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    try:
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"},
                          transport=transport, timeout=30) as c, c.stream("GET", f"/jobs/{job['id']}/model") as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(1024):
                if not received:
                    stack.kill_api()
                received += chunk
                time.sleep(0.01)
    except httpx.TransportError:
        outcome = "error"
    if outcome == "complete":  # it was all in the socket buffers already: it must be the whole file
        assert hashlib.sha256(received).hexdigest() == meta["sha256"]
    else:
        assert len(received) < meta["bytes"]
    print(f"\n[figure] model download ({meta['bytes']} bytes) with the API killed after the first chunk: "
          f"{outcome} ({len(received)} bytes received)")
    stack.start_api()
    with stack.client() as c:
        assert c.get(f"/jobs/{job['id']}").json()["status"] == "succeeded"
    assert_downloads_match(stack, job)


# -- the database cut off --------------------------------------------------------------------------
class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut (every connection closed, nothing listening)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def up(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self.server is not None
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): nothing listens any more
        self.server.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self.sockets.clear()


def test_database_unreachable_answers_503_and_recovers(stack: Stack, tmp_path: Path) -> None:
    """An API whose PostgreSQL goes away (every connection cut, nothing listening) answers 503 with
    `database_unavailable` on every route that needs it, /readyz names the database, /healthz stays up;
    when the database is back the same process answers normally again."""
    url = stack.env["MUSCLE_DATABASE_URL"]
    host_port, name = url.split("@", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    proxy = Proxy((host, int(port)))
    proxy.up()
    proxied = url.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/")
    api = Stack(tmp_path, {**stack.env, "MUSCLE_DATABASE_URL": proxied}, free_port())
    api.key = stack.key
    api.start_api()
    try:
        with api.client() as c:
            assert c.get("/jobs").status_code == 200
            proxy.cut()
            for method, path in (("GET", "/jobs"), ("GET", "/jobs/job_missing"), ("GET", "/files"),
                                 ("POST", "/jobs/job_missing/cancel")):
                r = c.request(method, path)
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                error = r.json()["error"]
                assert error["code"] == "database_unavailable" and "database" in error["message"]
                assert r.headers["Retry-After"]
            r = c.post("/files", files={"file": ("x.tsv", b"text\tlabel\na\t1\n")}, data={"purpose": "train"})
            assert r.status_code == 503, r.text
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
            assert c.get("/healthz").status_code == 200
            proxy.up()
            t0 = time.monotonic()
            assert c.get("/jobs").status_code == 200
            assert c.get("/readyz").status_code == 200
            print(f"\n[figure] database back: first answer in {time.monotonic() - t0:.2f} s")
    finally:
        api.stop()
        with contextlib.suppress(Exception):
            proxy.cut()
    assert "Traceback" not in api.log("api.log", tail=10**6)


# -- a full artifact disk --------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(folder: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of `size_mb` at `folder`; False (nothing mounted) where mounting is not allowed, or with
    MUSCLE_TEST_NO_MOUNT=1 (to run the simulated full disk here)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = not os.environ.get("MUSCLE_TEST_NO_MOUNT") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (256 * 1024))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_artifact_disk_fails_the_job_with_its_reason(tmp_path: Path, postgres_admin: str, redis_url: str,
                                                             s3_endpoint: str, dataset: dict[str, Path],
                                                             tiny_model: Path) -> None:
    """The artifact store (a local folder on a small tmpfs) fills up while the job exports: the job ends
    `failed` with the disk's error, nothing of it is served or left half-written, and once space is
    freed the next job succeeds."""
    store = tmp_path / "artifacts"
    flag = tmp_path / "disk-full"  # used only where no tmpfs can be mounted (not root)
    with small_disk(store, 16) as mounted:
        simulated = {} if mounted else {"MUSCLE_TEST_DISK_FULL_FLAG": str(flag)}
        with own_stack(tmp_path, postgres_admin, redis_url, s3_endpoint, hang_at="exporting",
                       MUSCLE_ARTIFACTS=str(store), **simulated) as s:
            job_id = post(s, dataset, config(tiny_model, epochs=1), ROLES)
            s.wait_marker("exporting")
            filler = fill(store) if mounted else flag
            filler.touch()
            print(f"\n[figure] full artifact disk: {'a 16 MB tmpfs, filled' if mounted else 'simulated ENOSPC'}")
            s.marker("exporting").with_name("at-exporting.go").touch()
            job = s.wait(job_id)
            assert job["status"] == "failed", (job, s.log())
            assert job["error"]["code"] == "artifact_upload_failed", job["error"]
            assert "No space left on device" in job["error"]["message"]
            assert not job["artifacts"]
            assert kinds(s, job_id)[-1] == "job.failed"
            with s.client() as c:
                for name in ("model", "adapter", "report"):
                    assert c.get(f"/jobs/{job_id}/{name}").status_code == 404
            leftovers = [p for p in (store / "jobs" / job_id).rglob("*") if p.is_file() and p.parent.name != "inputs"]
            assert leftovers == [], leftovers  # no archive, no temporary file, no checkpoint
            assert not list(store.rglob(".tmp-*"))

            filler.unlink()
            again = s.wait(post(s, dataset, config(tiny_model, epochs=1), ROLES))  # passes the hang: .go exists
            assert again["status"] == "succeeded", (again["error"], s.log())
            assert_downloads_match(s, again)
