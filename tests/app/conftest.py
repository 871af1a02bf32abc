"""Service-level fixtures: a migrated Postgres for the session, a rolled-back transaction
per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from app.migrate import upgrade_head
from tests.support.db import PostgresDatabase, create_database, drop_database, rolled_back_session


@pytest.fixture(scope="session")
def migrated_database() -> Iterator[PostgresDatabase]:
    db = create_database()
    upgrade_head(db.url)
    try:
        yield db
    finally:
        drop_database(db)


@pytest.fixture
def db(migrated_database: PostgresDatabase) -> Iterator[Session]:
    with rolled_back_session(migrated_database.url) as session:
        yield session
