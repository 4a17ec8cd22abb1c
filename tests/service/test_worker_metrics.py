"""The worker's step clock: step time and throughput from step events that may skip steps."""

from __future__ import annotations

from worker.metrics import REGISTRY, StepClock


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_step_time_and_throughput_from_sparse_step_events() -> None:
    before = sample("muscle_worker_step_seconds_count")
    before_sum = sample("muscle_worker_step_seconds_sum")
    clock = StepClock(batch_size=32)
    clock.step(10, now=100.0)  # the first event only starts the clock
    clock.step(14, now=102.0)  # 4 steps in 2 s
    assert sample("muscle_worker_step_seconds_count") - before == 4
    assert abs(sample("muscle_worker_step_seconds_sum") - before_sum - 2.0) < 1e-9
    assert sample("muscle_worker_samples_per_second") == 64.0
    clock.step(14, now=103.0)  # a repeated step (a resumed job) observes nothing
    clock.step(None)
    assert sample("muscle_worker_step_seconds_count") - before == 4
