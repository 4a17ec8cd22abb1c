"""Fixtures for the service tests: real Redis, PostgreSQL, an S3 server (moto) and processes.

A service that is unreachable skips its tests, except under CI=true, where it fails them.
Override the addresses with MUSCLE_TEST_REDIS_URL and MUSCLE_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text

from core.service.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable

CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("MUSCLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("MUSCLE_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


def unavailable(what: str) -> None:
    message = f"{what} is unreachable"
    if CI:
        pytest.fail(f"{message} (CI=true: service tests fail instead of skipping)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=1.0)
            return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


# -- Redis -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception:  # noqa: BLE001
        unavailable(f"Redis at {REDIS_URL}")
    return REDIS_URL


def _queue(redis_url: str) -> Iterator[str]:
    import redis

    name = f"muscle-test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{name}*"):
        client.delete(key)
    # A killed worker leaves its message in kombu's shared `unacked` hash; drop ours so no other
    # worker on this Redis restores it into our (deleted) queue after the visibility timeout.
    for tag, raw in client.hgetall("unacked").items():
        if name.encode() in raw:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


@pytest.fixture(scope="session")
def queue_name(redis_url: str) -> Iterator[str]:
    """A queue of our own, so parallel runs on one Redis do not take each other's messages."""
    yield from _queue(redis_url)


@pytest.fixture(scope="session")
def stack_queue(redis_url: str) -> Iterator[str]:
    """The end-to-end worker's queue (the in-process API tests leave unconsumed messages on theirs)."""
    yield from _queue(redis_url)


# -- PostgreSQL ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin() -> str:
    try:
        engine = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT",
                               connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception:  # noqa: BLE001
        unavailable(f"PostgreSQL at {POSTGRES_URL}")
    return POSTGRES_URL


def create_database(admin_url: str) -> str:
    """A fresh database `muscle_test_<random>` next to the admin one; returns its URL."""
    name = f"muscle_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    from core.service.db import get_engine, get_read_engine

    get_engine.cache_clear()  # close pooled connections of this process
    get_read_engine.cache_clear()
    name = url.rsplit("/", 1)[1]
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def fresh_postgres(postgres_admin: str) -> Iterator[str]:
    """An empty database for one test (no schema)."""
    url = create_database(postgres_admin)
    yield url
    drop_database(postgres_admin, url)


@pytest.fixture(scope="session")
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A migrated database shared by the session's tests (each test uses its own rows)."""
    from core.service.migrate import upgrade

    url = create_database(postgres_admin)
    upgrade(url)
    yield url
    drop_database(postgres_admin, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    from core.service.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs a test on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(name)


# -- S3 (moto_server) -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        unavailable("moto_server (pip install 'moto[server]')")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not wait_http(url, 90, proc):
        proc.kill()
        unavailable("moto_server")
    yield url
    proc.terminate()
    proc.wait(60)
    log.close()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    for k, v in S3_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    name = f"muscle-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


# -- settings and keys --------------------------------------------------------------------------
def make_settings(tmp_path: Path, database_url: str, broker_url: str, queue: str,
                  **extra: object) -> Settings:
    extra.setdefault("allowed_models", ["*"])  # the tests' tiny models live in temporary folders
    return Settings(data_dir=tmp_path / "data", database_url=database_url, broker_url=broker_url,
                    queue=queue, **extra)


def new_key(database_url: str, name: str = "test") -> str:
    from core.service.auth import create_api_key
    from core.service.db import session_scope

    with session_scope(database_url) as db:
        return create_api_key(db, name)[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_model

    return make_tiny_model("bert", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.service.data import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"))


# -- the whole service in subprocesses -----------------------------------------------------------
def stack_env(folder: Path, database: str, broker_url: str, queue: str, s3_endpoint: str,
              **overrides: str) -> dict[str, str]:
    """The environment of a real deployment: PostgreSQL `database`, the broker, S3 artifacts in a new
    bucket (moto). Short lease/heartbeat/poll intervals so crash recovery and cancel are quick to observe."""
    import boto3

    bucket = f"muscle-e2e-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    return {**os.environ, **S3_CREDENTIALS,
            "MUSCLE_DATA_DIR": str(folder / "data"), "MUSCLE_DATABASE_URL": database,
            "MUSCLE_BROKER_URL": broker_url, "MUSCLE_QUEUE": queue,
            "MUSCLE_ARTIFACTS": f"s3://{bucket}/service", "MUSCLE_S3_ENDPOINT_URL": s3_endpoint,
            "MUSCLE_WORK_DIR": str(folder / "work"), "MUSCLE_ALLOWED_MODELS": '["*"]',
            "MUSCLE_WORKER_METRICS_PORT": str(free_port()),
            "MUSCLE_LEASE_SECONDS": "4", "MUSCLE_HEARTBEAT_SECONDS": "1",
            "MUSCLE_REAPER_INTERVAL_SECONDS": "1",
            "MUSCLE_PROGRESS_INTERVAL_SECONDS": "0.5", "MUSCLE_CANCEL_POLL_SECONDS": "0.2",
            "MUSCLE_SSE_POLL_SECONDS": "0.2", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **overrides}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres_admin: str, redis_url: str, stack_queue: str,
          s3_endpoint: str) -> Iterator[object]:
    """uvicorn + one Celery worker, PostgreSQL (a fresh database), Redis broker, S3 artifacts (moto)."""
    from core.service.migrate import upgrade
    from tests.service.stack import Stack

    folder = tmp_path_factory.mktemp("stack")
    database = create_database(postgres_admin)
    upgrade(database)
    s = Stack(folder, stack_env(folder, database, redis_url, stack_queue, s3_endpoint), free_port())
    s.key = s.make_key("e2e")
    s.start_api()
    s.start_worker()
    try:
        yield s
    finally:
        s.stop()
        drop_database(postgres_admin, database)


# -- the API in-process (TestClient) ------------------------------------------------------------
CONFIG = json.dumps({"epochs": 1, "batch_size": 8, "max_length": 32, "metadata": {"team": "a"}})


class Api:
    def __init__(self, settings: Settings) -> None:
        from fastapi.testclient import TestClient

        from api.main import create_app

        self.settings = settings
        self.client = TestClient(create_app(settings))
        self.key = new_key(settings.database_url, "alice")
        self.other = new_key(settings.database_url, "bob")

    def h(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", **extra}

    def create(self, data: dict[str, Path], roles: tuple[str, ...] = ("train", "aux", "eval", "badnets"),
               config: str = CONFIG, key: str | None = None, **headers: str) -> Any:
        from tests.service.helpers import files

        return self.client.post("/jobs", headers=self.h(key, **headers), files=files(data, *roles),
                                data={"config": config})


@pytest.fixture
def make_api(tmp_path: Path, sqlite_url: str, redis_url: str, queue_name: str) -> Callable[..., Api]:
    def make(**extra: Any) -> Api:
        return Api(make_settings(tmp_path, sqlite_url, extra.pop("broker_url", redis_url), queue_name,
                                 **extra))
    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
