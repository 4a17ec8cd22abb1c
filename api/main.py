"""The FastAPI app: `uvicorn api.main:app` (settings from MUSCLE_* environment variables)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from api.errors import install_error_handlers
from api.event_hub import EventHub
from api.gc_tuning import tune_for_serving
from api.job_request import openapi_components
from api.limits import UploadLimitMiddleware
from api.metrics import STATUS_COLLECTOR, MetricsMiddleware
from api.queue import Dispatcher
from api.routers import artifacts, events, files, health, jobs
from core.service.artifacts import open_store
from core.service.settings import Settings, get_settings

DESCRIPTION = """Train a clean text classifier from an untrusted, possibly backdoor-poisoned dataset with
the MuScleLoRA defense. Every endpoint except /healthz, /readyz, /metrics and the docs needs
`Authorization: Bearer <API key>` (make one with `muscle apikey create --name NAME`).

Statuses: `validating -> queued -> running -> evaluating -> succeeded | failed`, and on cancel
`cancelling -> cancelled`. Terminal: `succeeded`, `failed`, `cancelled`."""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    tune_for_serving()  # after the imports and the app exist, before the first request
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = FastAPIOffline(title="MuScleLoRA job service", version="0.1.0", description=DESCRIPTION,
                         lifespan=_lifespan)
    app.state.settings = settings
    app.state.store = open_store(settings)
    app.state.dispatcher = Dispatcher(settings)
    app.state.event_hub = EventHub(settings.database_url, settings.sse_poll_seconds)
    STATUS_COLLECTOR.database_url = settings.database_url
    install_error_handlers(app)
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(MetricsMiddleware)
    for router in (health.router, files.router, jobs.router, events.router, artifacts.router):
        app.include_router(router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the two bodies POST /jobs reads itself."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())
        app.openapi_schema = schema
    return app.openapi_schema


app = create_app()
