"""Looking up a tenant's own resources: anything else is simply not found."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.orm import Session

from app.errors import NotFound

Owned = TypeVar("Owned")
MAX_ID_LENGTH = 40  # the id columns' width


def possible_id(ident: str) -> bool:
    """Ids are short and printable: one that is not names nothing, on every database
    (Postgres would refuse a NUL in the query, SQLite would look it up)."""
    return len(ident) <= MAX_ID_LENGTH and "\x00" not in ident


def owned(session: Session, model: type[Owned], ident: str, tenant: str, field: str) -> Owned:
    """The row, if it exists and belongs to the tenant; NotFound (404) naming `field` if not."""
    row: Any = session.get(model, ident) if possible_id(ident) else None
    if row is None or row.tenant_id != tenant:
        raise NotFound(f"no {field.removesuffix('_id')} with id {ident!r}", field=field)
    result: Owned = row
    return result
