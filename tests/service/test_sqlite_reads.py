"""Reads on an SQLite file reuse pooled connections at the API's concurrency (each new SQLite connection
runs the WAL and lock pragmas before its first read; a closed overflow connection is reopened by the
next request)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, text

from core.service.db import get_read_engine

REQUEST_THREADS = 40  # anyio's default pool for sync endpoints


def test_sqlite_reads_at_the_request_concurrency_reopen_no_connection(tmp_path: Path) -> None:
    engine = get_read_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    opened: list[int] = []
    event.listen(engine, "connect", lambda *_: opened.append(1))

    def read_concurrently() -> None:
        conns = [engine.connect() for _ in range(REQUEST_THREADS)]
        assert all(c.execute(text("SELECT 1")).scalar() == 1 for c in conns)
        for c in conns:
            c.close()

    read_concurrently()
    assert len(opened) == REQUEST_THREADS
    read_concurrently()
    assert len(opened) == REQUEST_THREADS  # every connection came back to the pool and was reused
