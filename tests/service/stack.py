"""A real deployment in subprocesses: uvicorn API + Celery worker, on PostgreSQL, Redis and S3 (moto)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"succeeded", "failed", "cancelled"}


class Stack:
    def __init__(self, folder: Path, env: dict[str, str], port: int) -> None:
        self.folder = folder
        self.env = env
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_starts = 0
        self.key = ""

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, args: list[str], log_name: str, **env: str) -> subprocess.Popen:
        log = open(self.folder / log_name, "ab")
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**self.env, **env}, stdout=log,
                                stderr=subprocess.STDOUT)

    def make_key(self, name: str) -> str:
        out = subprocess.run([sys.executable, "-m", "core.service.cli", "apikey", "create", "--name", name],
                             cwd=ROOT, env=self.env, check=True, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]  # the key is the last line

    def start_api(self) -> None:
        self.api = self._spawn(["-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
                                str(self.port), "--no-access-log"], "api.log")
        deadline = time.monotonic() + 180  # generous: a loaded CI machine imports torch slowly
        while time.monotonic() < deadline:
            assert self.api.poll() is None, self.log("api.log")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("API did not start\n" + self.log("api.log"))

    def start_worker(self, work_dir: Path | None = None, hang_at: str | None = None, **settings: str) -> None:
        """A worker; `work_dir` gives it a work folder of its own (another host, as far as disks go), and
        `settings` (MUSCLE_* variables) settings of its own. `hang_at` (tests/service/faults.py): the
        worker stops at that point of a job, touches `self.marker(hang_at)` and waits there."""
        self.worker_starts += 1
        env = {"MUSCLE_WORK_DIR": str(work_dir)} if work_dir is not None else {}
        if hang_at is not None:
            env.update(MUSCLE_TEST_HANG_AT=hang_at, MUSCLE_TEST_MARKER=str(self.marker(hang_at)))
            self.marker(hang_at).unlink(missing_ok=True)
        env.update(settings)
        entry = "tests.service.faults" if hang_at is not None else "celery"
        self.worker = self._spawn(["-m", entry, "-A", "worker.celery_app", "worker", "--pool=solo",
                                   "--concurrency=1", "-Q", self.env["MUSCLE_QUEUE"], "--without-gossip",
                                   "--without-mingle", "--hostname", f"w{self.worker_starts}@%h"],
                                  "worker.log", **env)

    def marker(self, point: str) -> Path:
        return self.folder / f"at-{point}"

    def wait_marker(self, point: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.marker(point).exists():
            assert self.worker is not None and self.worker.poll() is None, self.log()
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker never reached {point}\n{self.log()}")
            time.sleep(0.1)

    def kill_worker(self, sig: int = signal.SIGKILL) -> None:
        assert self.worker is not None
        os.kill(self.worker.pid, sig)
        self.worker.wait(30)

    def kill_api(self) -> None:
        assert self.api is not None
        os.kill(self.api.pid, signal.SIGKILL)
        self.api.wait(30)

    def stop(self) -> None:
        for proc in (self.worker, self.api):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def log(self, name: str = "worker.log", tail: int = 60) -> str:
        path = self.folder / name
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-tail:])

    # -- HTTP --------------------------------------------------------------------------------
    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {key or self.key}"})

    def wait(self, job_id: str, until: set[str] | None = None, timeout: float = 120,
             key: str | None = None) -> dict[str, Any]:
        until = until or TERMINAL
        deadline = time.monotonic() + timeout
        with self.client(key) as c:
            while True:
                job = c.get(f"/jobs/{job_id}").json()
                if job["status"] in until:
                    return job
                if time.monotonic() > deadline:
                    raise AssertionError(f"job {job_id} stuck in {job['status']}\n{self.log()}")
                time.sleep(0.25)

    def wait_event(self, job_id: str, predicate: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                for event in c.get(f"/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]:
                    if predicate(event):
                        return event
                time.sleep(0.2)
        raise AssertionError(f"no such event for {job_id}\n{self.log()}")

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.client() as c:
            return c.get(f"/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]


@contextlib.contextmanager
def own_stack(folder: Path, postgres_admin: str, broker_url: str, s3_endpoint: str, worker: bool = True,
              hang_at: str | None = None, **overrides: str) -> Iterator[Stack]:
    """A deployment of its own (database, queue, bucket), for faults the shared stack must not see."""
    from core.service.migrate import upgrade
    from tests.service.conftest import create_database, drop_database, free_port, stack_env

    database = create_database(postgres_admin)
    upgrade(database)
    queue = f"muscle-test-{uuid.uuid4().hex[:10]}"
    s = Stack(folder, stack_env(folder, database, broker_url, queue, s3_endpoint, **overrides), free_port())
    try:
        s.key = s.make_key("faults")
        s.start_api()
        if worker:
            s.start_worker(hang_at=hang_at)
        yield s
    finally:
        s.stop()
        drop_database(postgres_admin, database)
        with contextlib.suppress(Exception):  # messages no worker of ours took (Redis may be gone)
            import redis

            client = redis.Redis.from_url(broker_url, socket_connect_timeout=1)
            for key in client.scan_iter(f"*{queue}*"):
                client.delete(key)
