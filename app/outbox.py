"""The outbox: a message (a job to run, a teacher to inspect) is written in the transaction
that makes it necessary and published after the commit, by the API at once and by every
worker's relay for anything left behind (an API that died between commit and publish, a
broker that was down or lost its messages).

Publishing twice is harmless: a worker claims a job with a compare-and-set on its row, and
an inspection result lands only on a teacher still processing."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db import session_scope
from app.jobs.spec import JobSpec
from app.models import Job, OutboxMessage, Teacher, utcnow
from app.queue import publish_inspection, publish_job

log = logging.getLogger(__name__)


def enqueue(session: Session, job_id: str) -> None:
    """Ask for the job's message to be sent once this transaction commits."""
    session.add(OutboxMessage(job_id=job_id))
    session.flush()


def enqueue_inspection(session: Session, teacher_id: str) -> None:
    """Ask for the teacher to be inspected by a worker once this transaction commits."""
    session.add(OutboxMessage(teacher_id=teacher_id))
    session.flush()


def _wants_gpu(session: Session, job_id: str) -> bool:
    """Whether the job asked for a GPU: its message then goes to the GPU queue."""
    spec = session.scalar(select(Job.spec).where(Job.id == job_id))
    return spec is not None and JobSpec.model_validate(spec).resources.gpu


def _send(session: Session, message: OutboxMessage) -> None:
    if message.job_id is not None:
        publish_job(message.job_id, gpu=_wants_gpu(session, message.job_id))
    elif message.teacher_id is not None:
        publish_inspection(message.teacher_id)


def publish_pending(
    job_id: str | None = None, teacher_id: str | None = None, limit: int = 100
) -> int:
    """Send unpublished messages (of one job or teacher, or the oldest `limit`); returns how
    many went. Rows are locked while sent (SKIP LOCKED on Postgres), so two relays never send
    one row."""
    sent = 0
    with session_scope() as session:
        query = select(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        if job_id is not None:
            query = query.where(OutboxMessage.job_id == job_id)
        if teacher_id is not None:
            query = query.where(OutboxMessage.teacher_id == teacher_id)
        query = query.order_by(OutboxMessage.id).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for message in session.scalars(query):
            _send(session, message)
            message.published_at = utcnow()
            sent += 1
            session.flush()
    return sent


def _stale(
    session: Session,
    column: InstrumentedAttribute[str | None],
    waiting: ColumnElement[bool],
    model_id: InstrumentedAttribute[str],
    after_seconds: float,
) -> list[str]:
    """Ids still waiting (queued, processing) long after their last message was sent, with
    no message pending: the broker may have lost it (a Redis restart without persistence)."""
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    last_sent = (
        select(column.label("owner"), func.max(OutboxMessage.published_at).label("sent"))
        .where(column.is_not(None))
        .group_by(column)
        .subquery()
    )
    pending = select(column).where(OutboxMessage.published_at.is_(None), column.is_not(None))
    return list(
        session.scalars(
            select(model_id)
            .join(last_sent, last_sent.c.owner == model_id)
            .where(waiting, last_sent.c.sent < cutoff, model_id.not_in(pending))
        )
    )


def republish_stale(session: Session, after_seconds: float) -> list[str]:
    """Queue a new message for every job still queued and every teacher still processing
    long after its message was sent."""
    jobs = _stale(session, OutboxMessage.job_id, Job.status == "queued", Job.id, after_seconds)
    for job_id in jobs:
        log.info(
            "job %s still queued %.0f s after its message; sending it again", job_id, after_seconds
        )
        enqueue(session, job_id)
    teachers = _stale(
        session,
        OutboxMessage.teacher_id,
        Teacher.status == "processing",
        Teacher.id,
        after_seconds,
    )
    for teacher_id in teachers:
        log.info(
            "teacher %s still processing %.0f s after its message; sending it again",
            teacher_id,
            after_seconds,
        )
        enqueue_inspection(session, teacher_id)
    return jobs + teachers
