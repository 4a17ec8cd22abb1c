"""Long-lived requests (event streams) must not hold pooled database connections: with more streams open
than the pool has connections, a poll still answers at once. A real HTTP server on loopback (uvicorn)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from core.service.db import MAX_OVERFLOW, POOL_SIZE
from core.service.settings import Settings
from tests.service.conftest import free_port, make_settings, new_key, wait_http
from tests.service.helpers import files

pytestmark = pytest.mark.service


def _serve(settings: Settings) -> tuple[uvicorn.Server, str]:
    """The API on a real HTTP server on loopback, in a thread of this process (set `should_exit` to stop)."""
    from api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    assert wait_http(url + "/healthz", 20), "the API did not start"
    return server, url


def _serve_a_queued_job(tmp_path: Path, sqlite_url: str, redis_url: str, queue_name: str,
                        dataset: dict[str, Path], sse_poll_seconds: float
                        ) -> tuple[uvicorn.Server, str, dict[str, str], str]:
    """A served API holding one job that stays queued (no worker consumes the queue, so its streams stay
    open): the server, its URL, the owner's headers and the job's id."""
    settings = make_settings(tmp_path, sqlite_url, redis_url, queue_name, sse_poll_seconds=sse_poll_seconds)
    headers = {"Authorization": f"Bearer {new_key(settings.database_url, 'streams')}"}
    server, url = _serve(settings)
    try:
        job = httpx.post(url + "/jobs", headers=headers, files=files(dataset, "train", "aux"), timeout=30).json()["id"]
    except BaseException:
        server.should_exit = True
        raise
    return server, url, headers, job


def test_a_poll_answers_while_more_streams_are_open_than_the_pool_has_connections(
        tmp_path: Path, sqlite_url: str, redis_url: str, queue_name: str, dataset: dict[str, Path]) -> None:
    server, url, headers, job = _serve_a_queued_job(tmp_path, sqlite_url, redis_url, queue_name, dataset, 0.5)
    streams = POOL_SIZE + MAX_OVERFLOW + 5
    opened = threading.Semaphore(0)
    stop = threading.Event()

    clients: list[httpx.Client] = []

    def hold() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            clients.append(c)
            try:
                with c.stream("GET", f"/jobs/{job}/events", params={"stream": "true"}) as r:
                    opened.release()
                    for _line in r.iter_lines():
                        if stop.is_set():
                            return
            except (httpx.HTTPError, RuntimeError):
                if not stop.is_set():  # the test closed the client on its way out: expected then only
                    raise

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(streams)]
    try:
        began = time.monotonic()
        for t in threads:
            t.start()
        for _ in range(streams):
            assert opened.acquire(timeout=60)
        assert time.monotonic() - began < 10, "streams queued for database connections"
        time.sleep(1.0)
        started = time.monotonic()
        r = httpx.get(f"{url}/jobs/{job}", headers=headers, timeout=60)
        waited = time.monotonic() - started
        assert r.status_code == 200 and r.json()["status"] == "queued"
        assert waited < 5, f"a poll waited {waited:.1f} s behind {streams} open streams"
    finally:
        stop.set()
        server.should_exit = True
        for c in list(clients):  # end the streams' threads now, not when a read times out in a later test
            c.close()


def _open_streams(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith("muscle_event_streams_open "))


def _open_streams_settle(url: str, expected: float, seconds: float = 10) -> float:
    """The open-streams gauge once it reads `expected`, or its last reading after `seconds`."""
    deadline = time.monotonic() + seconds
    while (value := _open_streams(url)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def test_a_stream_whose_client_leaves_is_closed_by_the_server(
        tmp_path: Path, sqlite_url: str, redis_url: str, queue_name: str, dataset: dict[str, Path]) -> None:
    """A stream whose client goes away while it waits for its job to move is ended by the server."""
    server, url, headers, job = _serve_a_queued_job(tmp_path, sqlite_url, redis_url, queue_name, dataset, 0.2)
    try:
        before = _open_streams(url)
        clients = [httpx.Client(base_url=url, headers=headers, timeout=30) for _ in range(5)]
        streams = [c.stream("GET", f"/jobs/{job}/events", params={"stream": "true"}) for c in clients]
        for s in streams:
            assert s.__enter__().status_code == 200
        assert _open_streams_settle(url, before + 5) == before + 5
        for s, c in zip(streams, clients, strict=True):
            s.__exit__(None, None, None)
            c.close()
        assert _open_streams_settle(url, before) == before, "streams of gone clients are still open"
    finally:
        server.should_exit = True
