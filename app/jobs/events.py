"""Job events: typed, ordered records of what happened (state, message, metrics)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.finite_json import finite_or_null
from app.models import JobEvent

EventType = Literal["state", "message", "metrics"]


def record_event(
    session: Session, job_id: str, type: EventType, message: str, data: dict[str, Any] | None = None
) -> None:
    session.add(JobEvent(job_id=job_id, type=type, message=message, data=data))
    session.flush()


def events_after(session: Session, job_id: str, after: int | None, limit: int) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    return list(session.scalars(query.order_by(JobEvent.id).limit(limit)))


def event_public(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "job.event",
        "created_at": event.created_at,
        "type": event.type,
        "message": event.message,
        "data": finite_or_null(event.data),
    }
