"""Migrations: empty -> head on Postgres (and SQLite), and the models agree with them."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from app.db import Base
from app.migrate import upgrade_head
from tests.support import PostgresDatabase


def _assert_models_match(url: str) -> None:
    """An autogenerate diff against the migrated database is empty: a table, column, index or
    type that the models declare and no migration creates (or the reverse) fails here."""
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_postgres_empty_to_head(postgres_database: PostgresDatabase) -> None:
    upgrade_head(postgres_database.url)
    _assert_models_match(postgres_database.url)
    upgrade_head(postgres_database.url)  # idempotent


def test_sqlite_empty_to_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    upgrade_head(url)
    _assert_models_match(url)
