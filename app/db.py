"""Database engine and sessions. The request dependency or the worker's scope commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app import finite_json
from app.settings import get_settings


class Base(DeclarativeBase):
    pass


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # API and worker are separate processes on one file: WAL lets readers run beside a
    # writer and busy_timeout waits for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str, idle_in_transaction_seconds: float = 60.0) -> Engine:
    # JSON columns (metrics, events, specs) never hold NaN or Infinity: see app/finite_json.py.
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=finite_json.dumps,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # connect_timeout: /readyz and the workers learn of an unreachable server in seconds.
    # idle_in_transaction_session_timeout: a process stopped inside a transaction (SIGSTOP, a
    # debugger, a swapped-out host) holds the job row's lock only that long; without it the
    # relay's `FOR UPDATE SKIP LOCKED` would skip that job, and never requeue it, until the
    # process woke up.
    idle_ms = max(1000, int(idle_in_transaction_seconds * 1000))
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={
            "connect_timeout": 5,
            "options": f"-c idle_in_transaction_session_timeout={idle_ms}",
        },
        json_serializer=finite_json.dumps,
    )


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return make_engine(settings.resolved_database_url, settings.lease_timeout_seconds / 2)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
