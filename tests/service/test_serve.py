"""`muscle serve`: the embedded mode (SQLite, SQLite broker, local files) needs no other service.
Also: a warm shutdown hands the running job back, and the next start resumes it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import free_port
from tests.service.helpers import files

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class Serve:
    def __init__(self, data_dir: Path, port: int, log: Path, models: Path) -> None:
        env = {**os.environ, "MUSCLE_DATA_DIR": str(data_dir), "MUSCLE_PORT": str(port),
               "MUSCLE_ALLOWED_MODELS": json.dumps(["minilm", str(models)]),  # the operator's model folder
               "MUSCLE_PROGRESS_INTERVAL_SECONDS": "0.5", "MUSCLE_CANCEL_POLL_SECONDS": "0.2",
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        for name in ("MUSCLE_DATABASE_URL", "MUSCLE_BROKER_URL", "MUSCLE_ARTIFACTS", "MUSCLE_WORK_DIR"):
            env.pop(name, None)  # the embedded defaults
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "core.service.cli", "serve"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the banner ends with the key or the "exist" line
            self.lines.append(line.rstrip("\n"))
            if line.startswith("msk_") or "API key(s) exist" in line:
                break
        assert self.lines, log.read_text()[-3000:]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def test_serve_embedded_and_resume_after_a_warm_shutdown(tmp_path: Path, dataset: dict[str, Path],
                                                         tiny_model: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = Serve(tmp_path / "muscle-data", port, tmp_path / "serve.log", tiny_model.parent)
    try:
        assert first.lines[0].startswith(f"MuScleLoRA job service: {url}")
        key = first.lines[-1]
        assert key.startswith("msk_")
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "artifacts": "ok"}
        cfg = {"model": str(tiny_model), "epochs": 12, "batch_size": 8, "max_length": 32, "device": "cpu"}
        r = client.post("/jobs", files=files(dataset, "train", "aux"), data={"config": json.dumps(cfg)})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 90
        while not any(e["type"] == "epoch" for e in client.get(f"/jobs/{job_id}/events").json()["data"]):
            status = client.get(f"/jobs/{job_id}").json()["status"]
            assert status == "running" or status == "queued", (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
    finally:
        assert first.stop() == 0

    # Only the key's hash is stored.
    assert key.encode() not in (tmp_path / "muscle-data" / "muscle.sqlite").read_bytes()

    second = Serve(tmp_path / "muscle-data", port, tmp_path / "serve.log", tiny_model.parent)
    try:
        assert "API key(s) exist" in second.lines[-1]  # no second key printed
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        deadline = time.monotonic() + 120
        while (job := client.get(f"/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.3)
        assert job["status"] == "succeeded", job["error"]
        types = [e["type"] for e in client.get(f"/jobs/{job_id}/events?limit=1000").json()["data"]]
        assert "job.requeued" in types and "job.resumed" in types
        model = client.get(f"/jobs/{job_id}/model")
        assert hashlib.sha256(model.content).hexdigest() == model.headers["X-Checksum-SHA256"]
    finally:
        assert second.stop() == 0
