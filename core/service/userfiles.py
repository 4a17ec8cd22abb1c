"""Helpers for turning engine errors and metrics into what the service stores and shows."""

from __future__ import annotations

import math
from typing import Any

from core.errors import DataError, MuscleError


def user_error(exc: MuscleError, names: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """`exc.to_dict()` with our staged paths replaced by the client's own file names.

    `names` maps a staged path (as str) to (client file name, role).
    """
    body = exc.to_dict()
    file = body.get("file")
    if file and str(file) in names:
        filename, role = names[str(file)]
        body["message"] = str(body["message"]).replace(str(file), filename)
        body["file"] = filename
        body["param"] = body.get("param") or role
    elif not isinstance(exc, DataError):
        body["param"] = body.get("param") or "config"  # a ConfigError is about the config field
    return body


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON (PostgreSQL refuses them): store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


SUMMARY_KEYS = ("cacc", "asr", "best_epoch", "per_epoch", "cacc_source", "selection_source", "probe_sources",
                "selection_rows",
                "screen", "wall_seconds", "train_seconds")


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the job object shows under `metrics`; the whole file is GET /jobs/{id}/report."""
    return json_safe({k: metrics[k] for k in SUMMARY_KEYS if k in metrics})
