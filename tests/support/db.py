"""Service-level tests on real Postgres: one migrated database per test session, and each
test in a transaction that is rolled back (as Polar's fixtures do), so a broken rule fails a
fast test rather than only a full-stack one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from sqlalchemy import create_engine, pool
from sqlalchemy.orm import Session

PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class PostgresDatabase:
    name: str
    url: str


def sqlalchemy_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


def create_database() -> PostgresDatabase:
    name = f"distillery_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PostgresDatabase(name=name, url=sqlalchemy_url(name))


def drop_database(db: PostgresDatabase) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@contextmanager
def rolled_back_session(url: str) -> Iterator[Session]:
    """A session whose every commit lands in a savepoint of one outer transaction, which is
    rolled back at the end: nothing the test writes outlives it."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            outer.rollback()
    engine.dispose()
