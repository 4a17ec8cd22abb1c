"""API keys: random, stored only as sha256, revocable; `apikey create` prints the key last."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from core.jobs.auth import create_api_key, generate_key, hash_key, lookup_key
from core.jobs.db import session_scope
from core.jobs.models import ApiKey, utcnow

ROOT = Path(__file__).resolve().parents[2]


def test_keys_are_random_and_stored_hashed(sqlite_url: str) -> None:
    assert generate_key() != generate_key() and generate_key().startswith("msk_")
    assert len(generate_key()) >= 40
    with session_scope(sqlite_url) as db:
        row, key = create_api_key(db, "ci")
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    with session_scope(sqlite_url) as db:
        assert lookup_key(db, key).id == row.id
        assert lookup_key(db, key + "x") is None and lookup_key(db, "not-a-key") is None
        db.get(ApiKey, row.id).revoked_at = utcnow()
    with session_scope(sqlite_url) as db:
        assert lookup_key(db, key) is None


def test_cli_prints_the_key_as_the_last_line(tmp_path: Path) -> None:
    env = {**os.environ, "MUSCLE_DATA_DIR": str(tmp_path)}
    env.pop("MUSCLE_DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-m", "core.jobs.cli", "apikey", "create", "--name", "ops"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("msk_")
    url = f"sqlite:///{tmp_path / 'muscle.sqlite'}"
    with session_scope(url) as db:
        rows = db.scalars(select(ApiKey)).all()
        assert [(r.name, r.key_hash) for r in rows] == [("ops", hash_key(key))]
    assert key.encode() not in (tmp_path / "muscle.sqlite").read_bytes()
