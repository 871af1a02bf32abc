"""Which worker pools are alive: each writes when it was last seen (its relay, every pass),
and /readyz reads it to say when no worker serves a queue. The GPU queue is not among the
queues /readyz expects (a deployment without GPUs is ready); a job that asks for a GPU is
refused at submission instead while no GPU worker is alive."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
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


def served_queues(session: Session, settings: Settings) -> set[str]:
    """The queues some live worker serves."""
    cutoff = utcnow() - alive_within(settings)
    return set(
        session.scalars(
            select(WorkerSeen.queue)
            .where(WorkerSeen.last_seen >= cutoff)
            .group_by(WorkerSeen.queue)
        )
    )


def unserved_queues(session: Session, settings: Settings) -> list[str]:
    """The queues (jobs, inspections) that no live worker serves."""
    served = served_queues(session, settings)
    wanted = (settings.queue_name, settings.inspection_queue_name)
    return [queue for queue in wanted if queue not in served]


def require_gpu_worker(session: Session, settings: Settings) -> None:
    """A job that asks for a GPU needs a live worker on the GPU queue; else a 422 naming
    resources.gpu (its message would wait in a queue no one reads)."""
    queue = settings.resolved_gpu_queue_name
    if queue in served_queues(session, settings):
        return
    seen = last_seen(session, queue)
    raise InvalidInput(
        f"resources.gpu asks for a GPU, but no GPU worker is running: none serves the GPU "
        f"queue {queue!r} ({f'one was last seen at {seen}' if seen else 'none has been seen'})"
        ". Start one with `distillery worker --gpu` (docker compose --profile gpu up), or leave "
        "resources.gpu false to run on a CPU worker",
        field="resources.gpu",
        code="gpu_unavailable",
    )


def last_seen(session: Session, queue: str) -> str | None:
    when = session.scalar(select(func.max(WorkerSeen.last_seen)).where(WorkerSeen.queue == queue))
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else None
