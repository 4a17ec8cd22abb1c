"""Request dependencies: settings, a database session, the artifact store, the caller's API key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError
from api.queue import Dispatcher
from core.service.artifacts import ArtifactStore
from core.service.auth import lookup_key
from core.service.db import get_read_sessionmaker, get_sessionmaker
from core.service.models import ApiKey
from core.service.settings import Settings

bearer = HTTPBearer(auto_error=False, description="an API key made by `muscle apikey create`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def close_session(session: Session) -> None:
    try:
        session.close()
    except SQLAlchemyError:  # the database dropped the connection: discard it, never fail after the answer
        with suppress(SQLAlchemyError):
            session.invalidate()


@contextmanager
def _closing(maker: sessionmaker[Session]) -> Iterator[Session]:
    """A session that hands its connection back (or discards a dead one) on the way out."""
    session = maker()
    try:
        yield session
    finally:
        close_session(session)


def db_session(database_url: str) -> AbstractContextManager[Session]:
    return _closing(get_sessionmaker(database_url))


def read_session(database_url: str) -> AbstractContextManager[Session]:
    """An autocommit session for a request that only reads (one statement, no transaction)."""
    return _closing(get_read_sessionmaker(database_url))


def get_db(request: Request) -> Iterator[Session]:
    with db_session(request.app.state.settings.database_url) as session:
        yield session


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Session, Depends(get_db)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def current_key(db: DbDep, creds: CredentialsDep) -> ApiKey:
    return authenticate(db, creds)


UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def presented_key(creds: HTTPAuthorizationCredentials | None) -> str:
    """The bearer key the request carries, or 401."""
    if creds is None or creds.scheme.lower() != "bearer":
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'",
                       headers=UNAUTHORIZED)
    return creds.credentials


def invalid_key() -> ApiError:
    return ApiError(401, "unauthorized", "invalid API key", headers=UNAUTHORIZED)


def authenticate(db: Session, creds: HTTPAuthorizationCredentials | None) -> ApiKey:
    """The caller's active key, or 401."""
    key = lookup_key(db, presented_key(creds))
    db.commit()  # hand the connection back now: a request may wait for a thread long after its key check
    if key is None:
        raise invalid_key()
    return key


KeyDep = Annotated[ApiKey, Depends(current_key)]
