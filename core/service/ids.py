"""Public ids: a type prefix and 24 random base32 characters (`job_...`, `key_...`)."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{base64.b32encode(secrets.token_bytes(15)).decode().lower()}"
