"""The worker's Prometheus metrics, served on MUSCLE_WORKER_METRICS_PORT (one exporter per worker process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
JOBS_RUNNING = Gauge("muscle_worker_jobs_running", "Jobs this worker is running", registry=REGISTRY)
JOBS_FINISHED = Counter("muscle_worker_jobs_finished", "Jobs this worker ended, by outcome", ["outcome"],
                        registry=REGISTRY)
QUEUE_WAIT = Histogram("muscle_worker_queue_wait_seconds", "From a job's creation to its first start",
                       buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600), registry=REGISTRY)
STEP_SECONDS = Histogram("muscle_worker_step_seconds", "Wall time of one training step",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=REGISTRY)
SAMPLES_PER_SECOND = Gauge("muscle_worker_samples_per_second", "Training rows per second, latest steps",
                           registry=REGISTRY)


class StepClock:
    """Step time and throughput from the engine's step events (which may skip steps between reports)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.last: tuple[int, float] | None = None

    def step(self, step: int | None, now: float | None = None) -> None:
        if step is None:
            return
        now = time.monotonic() if now is None else now
        if self.last is not None and step > self.last[0]:
            steps, seconds = step - self.last[0], now - self.last[1]
            for _ in range(steps):
                STEP_SECONDS.observe(seconds / steps)
            if seconds > 0 and self.batch_size:
                SAMPLES_PER_SECOND.set(steps * self.batch_size / seconds)
        self.last = (step, now)


def start_exporter(port: int, host: str) -> None:
    start_http_server(port, addr=host, registry=REGISTRY)
