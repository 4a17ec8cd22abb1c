"""The worker lowers its own CPU priority, so a training sharing a host with the API does not slow the
API's answers (bench/results/hardening.md, load with a training beside it)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def niceness(pid: int) -> int:
    # /proc/PID/stat: the command name may hold spaces, so count fields after its closing parenthesis
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


def test_the_running_worker_trains_at_the_configured_niceness(stack) -> None:
    expected = max(10, os.nice(0))  # the default MUSCLE_WORKER_NICE
    deadline = time.monotonic() + 120  # the worker sets it while starting up
    while niceness(stack.worker.pid) != expected and time.monotonic() < deadline:
        assert stack.worker.poll() is None, stack.log()
        time.sleep(0.5)
    assert niceness(stack.worker.pid) == expected, stack.log()
    assert niceness(stack.api.pid) == os.nice(0)  # the API keeps its priority


def test_niceness_is_only_ever_raised() -> None:
    from worker.celery_app import raise_niceness

    current = os.nice(0)
    assert raise_niceness(current) == current  # a target at or below the current level changes nothing
    assert raise_niceness(0) == current
    assert os.nice(0) == current
