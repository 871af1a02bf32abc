"""The outbox: a job's message is written in the job's own transaction and published after
the commit, by the API at once and by every worker's relay for anything left behind
(an API that died between commit and publish, a broker that was down or lost its messages).

Publishing twice is harmless: a worker claims a job with a compare-and-set on its row, so a
second message finds the job taken (or finished) and leaves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import session_scope
from app.models import Job, OutboxMessage, utcnow

log = logging.getLogger(__name__)
Publish = Callable[[str], None]


def enqueue(session: Session, job_id: str) -> None:
    """Ask for the job's message to be sent once this transaction commits."""
    session.add(OutboxMessage(job_id=job_id))
    session.flush()


def publish_pending(publish: Publish, job_id: str | None = None, limit: int = 100) -> int:
    """Send unpublished messages (of one job, or the oldest `limit`); returns how many went.
    Rows are locked while sent (SKIP LOCKED on Postgres), so two relays never send one row."""
    sent = 0
    with session_scope() as session:
        query = select(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        if job_id is not None:
            query = query.where(OutboxMessage.job_id == job_id)
        query = query.order_by(OutboxMessage.id).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for message in session.scalars(query):
            publish(message.job_id)
            message.published_at = utcnow()
            sent += 1
            session.flush()
    return sent


def republish_stale_queued(session: Session, after_seconds: float) -> list[str]:
    """Jobs still queued long after their last message was sent: the broker may have lost the
    message (a Redis restart without persistence). Queue a new one."""
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    last_sent = (
        select(OutboxMessage.job_id, func.max(OutboxMessage.published_at).label("sent"))
        .group_by(OutboxMessage.job_id)
        .subquery()
    )
    pending = select(OutboxMessage.job_id).where(OutboxMessage.published_at.is_(None))
    stale = list(
        session.scalars(
            select(Job.id)
            .join(last_sent, last_sent.c.job_id == Job.id)
            .where(Job.status == "queued", last_sent.c.sent < cutoff, Job.id.not_in(pending))
        )
    )
    for job_id in stale:
        log.info(
            "job %s still queued %.0f s after its message; sending it again", job_id, after_seconds
        )
        enqueue(session, job_id)
    return stale
