"""The job poll on a real PostgreSQL: one read that reuses pooled connections and survives a connection
the server dropped (a restart) without answering 503."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.service.db import get_read_engine
from core.service.models import ApiKey, Job
from tests.service.conftest import make_settings
from tests.service.helpers import make_job


def _psycopg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _owner_key(url: str, job_id: str) -> str:
    """A fresh key made the owner of the job (make_job keeps no plaintext key)."""
    from core.service.auth import create_api_key
    from core.service.db import session_scope

    with session_scope(url) as db:
        row, key = create_api_key(db, "poller")
        db.get(Job, job_id).owner_id = row.id
        return key


def _sessions(admin: str, url: str) -> int:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_psycopg(admin), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()[0])


@pytest.fixture
def client(tmp_path: Path, fresh_postgres: str) -> TestClient:
    from core.service.migrate import upgrade

    upgrade(fresh_postgres)  # a database of its own: the tests count and kill its sessions
    return TestClient(create_app(make_settings(tmp_path, fresh_postgres, "memory://", "q")))


def test_concurrent_polls_reuse_pooled_connections(client: TestClient, fresh_postgres: str,
                                                   postgres_admin: str) -> None:
    job_id = make_job(fresh_postgres)
    headers = {"Authorization": f"Bearer {_owner_key(fresh_postgres, job_id)}"}

    def poll(_: int) -> int:
        return client.get(f"/jobs/{job_id}", headers=headers).status_code

    with ThreadPoolExecutor(32) as pool:
        assert set(pool.map(poll, range(64))) == {200}  # warm: the pool opens what it needs
        before = _sessions(postgres_admin, fresh_postgres)
        assert set(pool.map(poll, range(640))) == {200}
    # A pool smaller than the concurrency would close each overflow connection and open a new database
    # session for most of these 640 polls; a pool sized to the request threads opens next to none.
    assert _sessions(postgres_admin, fresh_postgres) - before <= 8


def test_a_poll_on_a_connection_the_server_dropped_is_answered(client: TestClient, fresh_postgres: str,
                                                               postgres_admin: str) -> None:
    job_id = make_job(fresh_postgres)
    key = _owner_key(fresh_postgres, job_id)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(f"/jobs/{job_id}", headers=headers).status_code == 200
    assert get_read_engine(fresh_postgres).pool.checkedin() >= 1  # a pooled connection to go stale
    name = fresh_postgres.rsplit("/", 1)[1]
    with psycopg.connect(_psycopg(postgres_admin), autocommit=True) as conn:
        killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]
    assert killed >= 1
    r = client.get(f"/jobs/{job_id}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == job_id
    # the same single read still tells a wrong key from a missing job
    assert client.get("/jobs/job_missing", headers=headers).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers={"Authorization": "Bearer msk_nope"}).status_code == 401


def test_a_revoked_key_cannot_poll(client: TestClient, fresh_postgres: str) -> None:
    from core.service.db import session_scope
    from core.service.models import utcnow

    job_id = make_job(fresh_postgres)
    key = _owner_key(fresh_postgres, job_id)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get(f"/jobs/{job_id}", headers=headers).status_code == 200
    with session_scope(fresh_postgres) as db:
        for row in db.query(ApiKey).filter(ApiKey.name == "poller"):
            row.revoked_at = utcnow()
    assert client.get(f"/jobs/{job_id}", headers=headers).status_code == 401
