"""The `config` form field: service options plus any TrainConfig field, checked before queueing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from api.errors import ApiError
from core.config import TrainConfig, resolve_config
from core.errors import ConfigError
from core.models.availability import check_model
from core.service.policy import device_allowed, model_allowed
from core.service.settings import Settings

# Keys that configure the job rather than training; everything else must be a TrainConfig field.
JOB_KEYS = ("metadata", "probes", "text_column", "label_column")
MAX_METADATA = 16


@dataclass
class JobOptions:
    request: dict[str, Any]
    train: TrainConfig
    metadata: dict[str, str] = field(default_factory=dict)
    probes: list[str] = field(default_factory=list)
    text_column: str = "text"
    label_column: str = "label"


def _bad(message: str, param: str = "config") -> ApiError:
    return ApiError(422, "invalid_config", message, param=param)


def check_choices(options: JobOptions, settings: Settings) -> None:
    """The operator's allow-lists first, then whether the model resolves at all (422 with the reason)."""
    model, device = options.train.model, options.train.device
    if not model_allowed(model, settings.allowed_models):
        raise ApiError(422, "model_not_allowed", f"model {model!r} is not allowed on this service; allowed: "
                       f"{', '.join(settings.allowed_models)} (MUSCLE_ALLOWED_MODELS)", param="config.model")
    if not device_allowed(device, settings.allowed_devices):
        raise ApiError(422, "device_not_allowed", f"device {device!r} is not allowed on this service; allowed: "
                       f"{', '.join(settings.allowed_devices)} (MUSCLE_ALLOWED_DEVICES)", param="config.device")
    try:
        check_model(model)
    except ConfigError as exc:
        raise _bad(str(exc), "config.model") from exc


def parse_config(text: str | None) -> JobOptions:
    try:
        raw = json.loads(text) if text and text.strip() else {}
    except json.JSONDecodeError as exc:
        raise _bad(f"config is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(raw, dict):
        raise _bad("config must be a JSON object")
    return options_from(raw)


def options_from(raw: dict[str, Any]) -> JobOptions:
    """Service options and training settings from a config object (the form's `config`, or a JSON
    body's settings)."""
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()):
        raise _bad(f"metadata: at most {MAX_METADATA} string pairs, keys <= 64 and values <= 512 "
                   "characters", "config.metadata")
    probes = raw.get("probes") or []
    if isinstance(probes, str):
        probes = [probes]
    if not isinstance(probes, list) or not all(isinstance(p, str) for p in probes):
        raise _bad("probes: a list of trigger names such as \"badnets\", \"addsent\" or "
                   "'insert:\"some text\"'", "config.probes")
    columns = {k: raw.get(k) or default
               for k, default in (("text_column", "text"), ("label_column", "label"))}
    for key, value in columns.items():
        if not isinstance(value, str):
            raise _bad(f"{key} must be a string", f"config.{key}")

    overrides = {k: v for k, v in raw.items() if k not in JOB_KEYS}
    profile = overrides.pop("profile", "default")
    try:
        train = resolve_config(str(profile), overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise _bad(f"{where}: {err['msg']}", f"config.{where}" if where else "config") from exc
    except ValueError as exc:
        raise _bad(str(exc), "config.profile") from exc
    return JobOptions(request=raw, train=train, metadata=metadata, probes=probes, **columns)
