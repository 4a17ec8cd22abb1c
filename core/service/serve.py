"""Embedded mode: `muscle serve` runs the API and one worker as subprocesses, with no other service.

Defaults: SQLite database and a SQLite-backed Celery broker (kombu's `sqla+sqlite` transport, no
server process) under MUSCLE_DATA_DIR, artifacts on the local disk. Any MUSCLE_* variable (e.g. a
Redis MUSCLE_BROKER_URL or PostgreSQL MUSCLE_DATABASE_URL) is passed on to both children. The
children are started by module name; nothing here imports api/ or worker/. Their logs go to stderr;
stdout carries only the banner (URL, then the API key as its last line on a first start).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from core.service.settings import Settings, get_settings


def _child_env(settings: Settings, host: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    # Resolved values, so both children agree whatever their working directory.
    env.update({
        "MUSCLE_DATA_DIR": str(settings.data_dir),
        "MUSCLE_DATABASE_URL": settings.database_url,
        "MUSCLE_BROKER_URL": settings.broker_url,
        "MUSCLE_ARTIFACTS": settings.artifacts,
        "MUSCLE_WORK_DIR": str(settings.work_path),
        "MUSCLE_HOST": host,
        "MUSCLE_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def api_command(host: str, port: int, log_level: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port),
            "--log-level", log_level.lower(), "--no-access-log"]


def worker_command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker", "--pool=solo",
            "--concurrency=1", "--prefetch-multiplier=1", "-Q", settings.queue,
            "--loglevel", settings.log_level.upper(), "--without-gossip", "--without-mingle",
            "--hostname", f"muscle-{os.getpid()}@%h"]


def _wait_healthy(url: str, proc: subprocess.Popen[Any], timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _first_key(settings: Settings) -> tuple[str | None, int]:
    """Create a key on the first start only; its plaintext is printed once and never stored."""
    from core.service.auth import count_keys, create_api_key
    from core.service.db import session_scope

    with session_scope(settings.database_url) as db:
        existing = count_keys(db)
        if existing:
            return None, existing
        _, key = create_api_key(db, "default (muscle serve)")
        return key, 0


def _stop(procs: list[subprocess.Popen[Any]], grace: float = 30.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the worker hands a running job back to the queue
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(host: str | None = None, port: int | None = None, with_worker: bool = True,
          with_api: bool = True) -> int:
    from core.service.migrate import upgrade

    settings = get_settings()
    host = host or settings.host
    port = port or settings.port
    settings.ensure_dirs()
    upgrade(settings.database_url)  # the only way the schema is made
    env = _child_env(settings, host, port)

    procs: list[subprocess.Popen[Any]] = []
    stopping = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["flag"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if with_worker:
            procs.append(subprocess.Popen(worker_command(settings), env=env, stdout=sys.stderr.fileno()))
        url = settings.public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        if with_api:
            api = subprocess.Popen(api_command(host, port, settings.log_level), env=env,
                                   stdout=sys.stderr.fileno())
            procs.append(api)
            if not _wait_healthy(url, api):
                print(f"error: the API did not come up on {url}", file=sys.stderr)
                return 1
        key, existing = _first_key(settings)
        print(f"MuScleLoRA job service: {url}  (API docs: {url}/docs)", flush=True)
        print(f"data: {settings.data_dir}  broker: {settings.broker_url.split('://')[0]}  "
              f"artifacts: {settings.artifacts}", flush=True)
        if key:
            print("API key (shown only now; only its hash is stored):", flush=True)
            print(key, flush=True)
        else:
            print(f"{existing} API key(s) exist; make another with `muscle apikey create --name NAME`",
                  flush=True)
        while not stopping["flag"]:
            for proc in procs:
                if proc.poll() is not None:
                    print(f"error: {proc.args[2]} exited with code {proc.returncode}; stopping",
                          file=sys.stderr)
                    return proc.returncode or 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(procs)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
