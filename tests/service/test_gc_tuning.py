"""The serving process tunes its garbage collector at startup (api/gc_tuning.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from api.gc_tuning import FIRST_GENERATION_THRESHOLD

# A fresh interpreter, so that freezing never touches the test process's objects.
PROBE = """
import gc, json
from fastapi.testclient import TestClient
from api.main import create_app
before = (gc.get_threshold()[0], gc.get_freeze_count())
with TestClient(create_app()) as client:
    client.get("/healthz")
    after = (gc.get_threshold()[0], gc.get_freeze_count())
print(json.dumps({"before": before, "after": after}))
"""


def test_the_app_freezes_startup_objects_and_raises_the_first_threshold(tmp_path: Path) -> None:
    env = {**os.environ, "MUSCLE_DATA_DIR": str(tmp_path), "MUSCLE_DATABASE_URL": f"sqlite:///{tmp_path}/jobs.db"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"][0] != FIRST_GENERATION_THRESHOLD and seen["before"][1] == 0
    assert seen["after"][0] == FIRST_GENERATION_THRESHOLD
    assert seen["after"][1] > 10_000  # the imported modules' objects are frozen
