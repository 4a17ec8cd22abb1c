"""Alembic makes the schema, on SQLite and on PostgreSQL, and it matches the models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from core.service.migrate import downgrade, upgrade
from core.service.models import Base

pytestmark = pytest.mark.service  # PostgreSQL half

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"api_keys", "jobs", "job_events", "idempotency_keys", "files", "alembic_version"}


def check_roundtrip(url: str) -> None:
    upgrade(url)
    engine = create_engine(url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        downgrade(url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)  # and back
        assert TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_sqlite(tmp_path: Path) -> None:
    check_roundtrip(f"sqlite:///{tmp_path / 'm.sqlite'}")


def test_migrations_postgresql(fresh_postgres: str) -> None:
    check_roundtrip(fresh_postgres)


def test_alembic_command_line_reads_the_url_from_settings(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    env = {**os.environ, "MUSCLE_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", "-c", "migrations/alembic.ini", "upgrade", "head"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    engine = create_engine(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
