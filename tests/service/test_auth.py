"""API keys: random, stored only as sha256, revocable; `apikey create` prints the key last."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from core.service.auth import create_api_key, generate_key, hash_key, lookup_key
from core.service.db import session_scope
from core.service.models import ApiKey, utcnow

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
    out = subprocess.run([sys.executable, "-m", "core.service.cli", "apikey", "create", "--name", "ops"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("msk_")
    url = f"sqlite:///{tmp_path / 'muscle.sqlite'}"
    with session_scope(url) as db:
        rows = db.scalars(select(ApiKey)).all()
        assert [(r.name, r.key_hash) for r in rows] == [("ops", hash_key(key))]
    assert key.encode() not in (tmp_path / "muscle.sqlite").read_bytes()


def test_keys_are_listed_and_revoked_from_the_cli_and_a_revoked_key_answers_401(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.service.settings import Settings

    env = {**os.environ, "MUSCLE_DATA_DIR": str(tmp_path)}
    env.pop("MUSCLE_DATABASE_URL", None)

    def muscle(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "core.service.cli", "apikey", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)

    key = muscle("create", "--name", "ops").stdout.strip().splitlines()[-1]
    other = muscle("create", "--name", "ci").stdout.strip().splitlines()[-1]
    listed = muscle("list").stdout
    assert "ops" in listed and "ci" in listed and key[:8] in listed and key not in listed
    key_id = next(line.split()[0] for line in listed.splitlines() if line.endswith(" ops"))
    client = TestClient(create_app(Settings(data_dir=tmp_path, broker_url="memory://")))
    assert client.get("/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    revoked = muscle("revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stderr
    assert client.get("/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert client.get("/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    import re

    dates = {line.split()[0]: len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line))
             for line in muscle("list").stdout.splitlines()[1:]}
    assert dates[key_id] == 2 and sorted(dates.values()) == [1, 2]  # created for both, revoked for it alone
    assert muscle("revoke", "key_nope").returncode == 1
