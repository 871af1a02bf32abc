"""Newest-first pages with an `after` cursor (the id of the last item seen)."""

from __future__ import annotations

from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import InvalidInput
from app.ownership import possible_id

T = TypeVar("T")


class Listed(Protocol):
    id: Any
    created_at: Any


def before(session: Session, model: type[Any], after: str) -> Any:
    """The rows listed after `after` newest first (older, or as old with a smaller id);
    InvalidInput naming `after` when it names no row."""
    anchor = session.get(model, after) if possible_id(after) else None
    if anchor is None:
        raise InvalidInput(f"`after` names no item: {after!r}", field="after")
    created: InstrumentedAttribute[Any] = model.created_at
    ident: InstrumentedAttribute[Any] = model.id
    return or_(created < anchor.created_at, and_(created == anchor.created_at, ident < anchor.id))


def newest_first(
    session: Session, model: type[Any], limit: int, after: str | None, where: Any = None
) -> dict[str, Any]:
    created: InstrumentedAttribute[Any] = model.created_at
    ident: InstrumentedAttribute[Any] = model.id
    query: Select[Any] = select(model)
    if where is not None:
        query = query.where(where)
    if after is not None:
        query = query.where(before(session, model, after))
    rows = list(session.scalars(query.order_by(created.desc(), ident.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return {"data": rows, "has_more": has_more, "next_after": rows[-1].id if has_more else None}


class Page(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_after: str | None = Field(description="Pass as `after` to get the next page.")
