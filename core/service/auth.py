"""API keys: `msk_` + 32 random bytes (urlsafe base64). Only the sha256 of a key is stored.

A fast hash is enough here: the key carries 256 bits of randomness, so there is nothing to brute-force
(unlike passwords), and every request hashes it once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from core.service.ids import new_id
from core.service.models import ApiKey, utcnow

KEY_PREFIX = "msk_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(session: Session, name: str) -> tuple[ApiKey, str]:
    """Store a new key's hash; return the row and the plaintext key (shown once, never stored)."""
    key = generate_key()
    row = ApiKey(id=new_id("key"), name=name, prefix=key[:8], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def key_digest(key: str) -> str | None:
    """The stored form of a presented key, or None when it cannot be one of ours."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    return hash_key(key)


def active_key(digest: str) -> ColumnElement[bool]:
    """The condition an active key's row meets: this digest, not revoked. Every key check uses it."""
    return and_(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))


def digest_matches(stored: str, digest: str) -> bool:
    """The index lookup already matched; compare again in constant time for good measure."""
    return hmac.compare_digest(stored, digest)


def lookup_key(session: Session, key: str) -> ApiKey | None:
    """The active key row for a presented key, or None."""
    digest = key_digest(key)
    if digest is None:
        return None
    row = session.scalar(select(ApiKey).where(active_key(digest)))
    return row if row is not None and digest_matches(row.key_hash, digest) else None


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)).all())


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke a key by id (its requests answer 401 from now on); None when there is no such key."""
    row = session.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def count_keys(session: Session) -> int:
    return len(session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).all())
