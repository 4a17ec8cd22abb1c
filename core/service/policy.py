"""What a tenant may choose: the operator's allow-lists for models and devices."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

from core.models.availability import is_local_model


def model_allowed(name: str, allowed: list[str]) -> bool:
    """`*` allows anything; `hub:PATTERN` allows hub ids (never a local path) matching PATTERN; a path entry
    allows that folder and what lies under it; any other entry is an exact name or fnmatch pattern for a
    non-path name (`minilm`)."""
    path = is_local_model(name)
    for entry in allowed:
        if entry == "*":
            return True
        if entry.startswith("hub:"):
            if not path and fnmatchcase(name, entry[4:]):
                return True
        elif is_local_model(entry):
            if path and Path(name).expanduser().resolve().is_relative_to(Path(entry).expanduser().resolve()):
                return True
        elif not path and fnmatchcase(name, entry):
            return True
    return False


def device_allowed(device: str, allowed: list[str]) -> bool:
    return "*" in allowed or any(fnmatchcase(device, entry) for entry in allowed)
