"""A job's states and the moves between them, in one place.

`move` is the only way a job's status changes. It is one conditional UPDATE: the job moves
only from a state the transition table allows (and, where a worker moves it, only while the
worker's lease token is still the job's), and the move's event is written in the same
transaction. The API (submit, cancel), the relay (expired leases), the lease (claim) and the
job pipeline (succeeded, failed, cancelled) all call it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from app.jobs.events import record_event
from app.models import Job, utcnow


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# to -> the states a job may move there from.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING}),  # a lease expired: run it again
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),  # a worker claimed it
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: ACTIVE,
    JobStatus.CANCELLED: ACTIVE,
}
# The stage a job shows on entering each state.
ENTRY_STAGE: Mapping[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "preparing",
    JobStatus.SUCCEEDED: "done",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def submitted(session: Session, job: Job) -> None:
    """A new job enters the machine: queued, with its first event."""
    job.status, job.stage, job.epoch = JobStatus.QUEUED, ENTRY_STAGE[JobStatus.QUEUED], 0
    session.add(job)
    session.flush()
    record_event(session, job.id, "state", "queued", {"status": JobStatus.QUEUED.value})


def move(
    session: Session,
    job_id: str,
    to: JobStatus,
    message: str,
    *,
    token: int | None = None,
    where: tuple[ColumnElement[bool], ...] = (),
    values: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> bool:
    """Move the job to `to` if it is in a state that may move there (and its lease token is
    `token`, when given, and the extra `where` conditions hold); write the event too.

    Returns whether the job moved. Entering a state sets its entry stage; entering a final
    state sets finished_at."""
    changes: dict[str, Any] = {"status": to.value, "stage": ENTRY_STAGE[to], **(values or {})}
    if to in TERMINAL:
        changes.setdefault("finished_at", utcnow())
    statement = update(Job).where(Job.id == job_id, Job.status.in_(TRANSITIONS[to]), *where)
    if token is not None:
        statement = statement.where(Job.lease_token == token)
    result = session.execute(statement.values(**changes))
    assert isinstance(result, CursorResult)
    if not result.rowcount:
        return False
    record_event(session, job_id, "state", message, {"status": to.value, **(data or {})})
    return True


def request_cancel(session: Session, job_id: str) -> None:
    """Queued jobs are cancelled at once; running ones are asked to stop: the worker sees the
    request at its next heartbeat and stops before its next training step."""
    if move(
        session,
        job_id,
        JobStatus.CANCELLED,
        "cancelled before it started",
        where=(Job.status == JobStatus.QUEUED,),
        values={"cancel_requested": True},
    ):
        return
    asked = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.RUNNING,
            Job.cancel_requested.is_(False),
        )
        .values(cancel_requested=True)
    )
    assert isinstance(asked, CursorResult)
    if asked.rowcount:
        record_event(
            session, job_id, "message", "cancel requested; stopping at the next training step"
        )


def fail(
    session: Session, job_id: str, code: str, message: str, *, token: int | None = None
) -> bool:
    """Fail an active job with a machine-readable code and a message for the user."""
    return move(
        session,
        job_id,
        JobStatus.FAILED,
        f"failed: {message}",
        token=token,
        values={"error_code": code, "error_message": message},
        data={"error": {"code": code, "message": message}},
    )


def enter_stage(session: Session, job_id: str, stage: str) -> None:
    """A running job's stage (loading, training, exporting, ...), with a message event."""
    session.execute(update(Job).where(Job.id == job_id).values(stage=stage))
    record_event(session, job_id, "message", f"stage: {stage}", {"stage": stage})
