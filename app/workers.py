"""Which worker pools are alive: each writes when it was last seen (its relay, every pass),
and /readyz reads it to say when no worker serves a queue."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import WorkerSeen, utcnow
from app.settings import Settings


def seen(session: Session, name: str, queue: str) -> None:
    row = session.get(WorkerSeen, name)
    if row is None:
        session.add(WorkerSeen(name=name, queue=queue))
    else:
        row.queue, row.last_seen = queue, utcnow()
    session.flush()


def alive_within(settings: Settings) -> timedelta:
    """A pool is alive if its relay wrote in the last few of its passes."""
    return timedelta(seconds=max(15.0, 3 * settings.reaper_interval_seconds))


def unserved_queues(session: Session, settings: Settings) -> list[str]:
    """The queues (jobs, inspections) that no live worker serves."""
    cutoff = utcnow() - alive_within(settings)
    served = set(
        session.scalars(
            select(WorkerSeen.queue)
            .where(WorkerSeen.last_seen >= cutoff)
            .group_by(WorkerSeen.queue)
        )
    )
    wanted = (settings.queue_name, settings.inspection_queue_name)
    return [queue for queue in wanted if queue not in served]


def last_seen(session: Session, queue: str) -> str | None:
    when = session.scalar(select(func.max(WorkerSeen.last_seen)).where(WorkerSeen.queue == queue))
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else None
