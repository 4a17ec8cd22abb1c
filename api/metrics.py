"""Prometheus metrics: request counts/latency, jobs created, and job counts by status from the DB."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from core.service.db import get_sessionmaker
from core.service.models import STATUSES, Job

REGISTRY = CollectorRegistry(auto_describe=True)
JOBS_CREATED = Counter("muscle_jobs_created", "Jobs accepted by POST /jobs", registry=REGISTRY)
REQUESTS = Counter("muscle_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
EVENT_STREAMS = Gauge("muscle_event_streams_open", "Server-sent event streams this API process holds open",
                      registry=REGISTRY)
LATENCY = Histogram("muscle_http_request_seconds", "HTTP request latency", ["method", "route"],
                    registry=REGISTRY)


class JobStatusCollector(Collector):
    """Scrape-time counts, so every API replica reports the same, database-wide numbers."""

    def __init__(self) -> None:
        self.database_url: str | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("muscle_jobs", "Jobs by status", labels=["status"])
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        if self.database_url:
            try:
                with get_sessionmaker(self.database_url)() as db:
                    rows = db.execute(select(Job.status, func.count()).group_by(Job.status)).all()
                    counts.update({status: int(n) for status, n in rows})
            except Exception:  # noqa: BLE001 - a scrape must not fail because the DB blinked
                pass
        for status, count in counts.items():
            gauge.add_metric([status], count)
        yield gauge


STATUS_COLLECTOR = JobStatusCollector()
REGISTRY.register(STATUS_COLLECTOR)


class MetricsMiddleware:
    """Counts requests by route template (not raw path, which would explode label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], route, str(status["code"])).inc()
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)
