"""Engine and session factory. One engine per URL per process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API read while the worker writes; busy_timeout waits instead of failing on a lock.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


# The API runs sync endpoints on anyio's pool of 40 threads; a request must never queue for a connection
# behind the others. A pool keeps `pool_size` connections once opened (lazily) and closes an overflow
# connection when it comes back, so a pool much smaller than the steady concurrency opens a new database
# session per request (PostgreSQL forks a backend for each: 2,380 in 60 s of 200 pollers with 10).
POOL_SIZE, MAX_OVERFLOW = 20, 30
# The read pool serves the most frequent request (a job poll) and keeps a connection per thread.
READ_POOL_SIZE, READ_MAX_OVERFLOW = 40, 10


def _in_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:")


def _sqlite_engine(url: str, pool_size: int = POOL_SIZE, max_overflow: int = MAX_OVERFLOW,
                   **options: Any) -> Engine:
    # in memory: one shared connection, no pool to size
    pool = {} if _in_memory(url) else {"pool_size": pool_size, "max_overflow": max_overflow}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool, **options)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # pre-ping: a connection the server dropped (a restart) is replaced before a write uses it
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)


@lru_cache(maxsize=8)
def get_read_engine(url: str) -> Engine:
    """Autocommit and no pre-ping: a single read statement costs one round trip instead of four (ping,
    BEGIN, statement, ROLLBACK). A dropped connection surfaces as `connection_invalidated` on the
    statement, and `read_once_more` repeats it on a fresh one."""
    if _in_memory(url):  # the one shared connection holds the data
        return get_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    if url.startswith("sqlite"):  # a file: nothing to ping; a pool per thread, as for a server
        return _sqlite_engine(url, READ_POOL_SIZE, READ_MAX_OVERFLOW, isolation_level="AUTOCOMMIT")
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_size=READ_POOL_SIZE,
                         max_overflow=READ_MAX_OVERFLOW)


@lru_cache(maxsize=8)
def get_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@lru_cache(maxsize=8)
def get_read_sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_read_engine(url), expire_on_commit=False)


def read_once_more(read: Callable[[], T]) -> T:
    """Run a read-only callable; if its connection turns out dead (the server restarted), run it again once,
    on a new connection. Safe only for reads."""
    try:
        return read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return read()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
