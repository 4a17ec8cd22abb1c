"""The worker's runner without Celery: duplicate deliveries are dropped, a lost lease stops the run
without touching the job, and progress is recorded while the engine runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import worker.runner as runner_module
from core.engine import ProgressEvent
from core.errors import JobCancelled
from core.service import lease
from core.service.artifacts import LocalArtifactStore
from core.service.db import session_scope
from core.service.models import RUNNING, Job
from core.service.settings import Settings
from tests.service.helpers import get_job, make_job
from worker.runner import JobRunner

pytestmark = pytest.mark.service  # PostgreSQL half


def make_runner(db_url: str, tmp_path: Path, **extra: Any) -> JobRunner:
    settings = Settings(data_dir=tmp_path, database_url=db_url, lease_seconds=2, heartbeat_seconds=0.2,
                        cancel_poll_seconds=0.05, progress_interval_seconds=0.0, **extra)
    return JobRunner(settings, LocalArtifactStore(tmp_path / "artifacts"), threading.Event(), lambda _: None)


def test_a_duplicate_delivery_is_skipped_while_the_lease_is_held(db_url: str, tmp_path: Path) -> None:
    """What a broker redelivery after the visibility timeout finds: the job running elsewhere."""
    job_id = make_job(db_url)
    with session_scope(db_url) as db:
        assert lease.acquire(db, job_id, "first-worker", 60)
    assert make_runner(db_url, tmp_path).run(job_id) == "skipped"
    job = get_job(db_url, job_id)
    assert job.status == RUNNING and job.lease_owner == "first-worker" and job.attempts == 1


def test_a_lost_lease_stops_the_engine_and_leaves_the_job_to_its_new_owner(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = make_job(db_url, inputs={"files": {}}, config={"epochs": 3})
    steps: list[int] = []

    def fake_engine(inputs: Any, config: Any, out_dir: Path, progress: Any, should_cancel: Any,
                    resume: bool, explicit_keys: set[str]) -> Any:
        for step in range(1, 10_000):
            progress(ProgressEvent(kind="step", epoch=1, step=step, total_steps=10_000, loss=0.5))
            steps.append(step)
            if step == 5:  # another worker takes the job over (our lease "expired")
                with session_scope(db_url) as db:
                    db.get(Job, job_id).lease_owner = "thief"
            if should_cancel():
                raise JobCancelled("stopped")
            time.sleep(0.01)
        raise AssertionError("the run was not stopped")

    monkeypatch.setattr(runner_module, "run_job", fake_engine)
    monkeypatch.setattr(JobRunner, "_stage_inputs", lambda self, inputs, folder: (None, {}))
    monkeypatch.setattr(runner_module, "TrainConfig", lambda **kw: kw)
    assert make_runner(db_url, tmp_path).run(job_id) == "lease_lost"
    job = get_job(db_url, job_id)
    assert job.lease_owner == "thief" and job.status == RUNNING  # untouched
    assert 5 <= len(steps) < 100
    assert job.progress["step"] >= 1  # steps were recorded while it ran


def test_work_dirs_of_finished_or_deleted_jobs_are_cleaned(db_url: str, tmp_path: Path) -> None:
    from worker.sweeper import clean_work_dirs

    settings = Settings(data_dir=tmp_path, database_url=db_url)
    live, done = make_job(db_url, RUNNING), make_job(db_url, "cancelled")
    for name in (live, done, "job_deleted0000000000000000"):
        (settings.work_path / name / "out").mkdir(parents=True)
    assert sorted(clean_work_dirs(settings)) == sorted([done, "job_deleted0000000000000000"])
    assert [p.name for p in settings.work_path.iterdir()] == [live]
