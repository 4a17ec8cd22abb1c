"""Whether a job's `model` can be loaded, checked at submission rather than in the queue."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ConfigError
from core.models.backbones import family_of_model_type, resolve_model_source

HUB_TIMEOUT = 5.0  # seconds: a submission must not hang on an unreachable hub


def is_local_model(name: str) -> bool:
    """A name that means a folder on this machine, not a hub id or an alias."""
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE",
                                                                             "TRANSFORMERS_OFFLINE"))


def _check_architecture(folder: str | Path) -> None:
    import json

    config = json.loads((Path(folder) / "config.json").read_text())
    family_of_model_type(str(config.get("model_type", "")), (config.get("architectures") or [None])[0])


def check_model(name: str) -> None:
    """ConfigError with the reason unless `name` is the packaged alias, a local transformers folder, a hub id
    in the local cache, or a hub id the hub knows. Local and cached models must be a supported architecture."""
    source = resolve_model_source(name)  # alias or folder; a folder without config.json is refused here
    if Path(source).is_dir():
        _check_architecture(source)
        return
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError as exc:
        raise ConfigError(f"model {name!r} is not a known alias (minilm), not a local folder and not a valid "
                          f"hub id: {exc}") from None
    if isinstance(cached, str):
        _check_architecture(Path(cached).parent)
        return
    if _offline():
        raise ConfigError(f"model {name!r} is not a known alias (minilm), not a local folder, and not in the "
                          "hub cache; the hub is switched off here (HF_HUB_OFFLINE)")
    try:
        model_info(name, timeout=HUB_TIMEOUT)
    except RepositoryNotFoundError:
        raise ConfigError(f"model {name!r} is not a known alias (minilm), not a local folder, and the hub has "
                          "no such model (or it is private)") from None
    except Exception as exc:  # noqa: BLE001 - network errors vary by transport
        raise ConfigError(f"model {name!r} is not a known alias (minilm), not a local folder, not in the hub "
                          f"cache, and the hub could not be reached ({type(exc).__name__})") from None
