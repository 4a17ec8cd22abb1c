"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.metrics import REGISTRY
from core.service.db import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _database(url: str) -> None:
    with get_engine(url).connect() as conn:
        conn.execute(text("SELECT 1"))


def _checks(request: Request) -> dict[str, str]:
    state = request.app.state
    results: dict[str, str] = {}
    for name, check in (
        ("database", lambda: _database(state.settings.database_url)),
        ("broker", state.dispatcher.ping),
        ("artifacts", state.store.check),
    ):
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    return results


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Database, broker and artifact store reachable: 200, else 503 with what failed."""
    results = await run_in_threadpool(_checks, request)
    ok = all(v == "ok" for v in results.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": results},
                        status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
