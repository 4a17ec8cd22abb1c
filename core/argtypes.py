"""Argument types the command lines share: `KEY=VALUE` pairs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def split_pair(value: str, form: str = "KEY=VALUE", need_value: bool = False) -> tuple[str, str]:
    """`key=rest` as (key, rest); argparse's error otherwise."""
    key, sep, raw = value.partition("=")
    if not sep or not key or (need_value and not raw):
        raise argparse.ArgumentTypeError(f"expected {form}, got {value!r}")
    return key, raw


def parse_value(raw: str) -> Any:
    """A JSON value (number, list, null, ...), else the text itself: plain strings need no quotes."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def key_value(value: str) -> tuple[str, Any]:
    key, raw = split_pair(value)
    return key, parse_value(raw)


def key_text(value: str) -> tuple[str, str]:
    """A pair whose value stays text (a metadata string)."""
    return split_pair(value)


def name_path(value: str) -> tuple[str, Path]:
    """`NAME=PATH`: a probe file named by its probe."""
    name, path = split_pair(value, "NAME=PATH", need_value=True)
    return name, Path(path)
