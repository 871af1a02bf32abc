"""The job state machine on real Postgres: allowed moves happen with their event, others do
nothing, and a worker's move is fenced by its lease token."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.jobs.state import TERMINAL, TRANSITIONS, JobStatus, fail, move, request_cancel
from app.models import Job, JobEvent
from tests.support.rows import job


def _events(session: Session, job_id: str) -> list[JobEvent]:
    return list(
        session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    )


def _status(session: Session, job_id: str) -> str:
    session.expire_all()
    found = session.get(Job, job_id)
    assert found is not None
    return found.status


def _force(session: Session, job_id: str, status: JobStatus, token: int = 1) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(status=status, lease_token=token))


def test_a_submitted_job_is_queued_with_one_event(db: Session) -> None:
    queued = job(db)
    assert (queued.status, queued.stage, queued.epoch) == ("queued", "queued", 0)
    events = _events(db, queued.id)
    assert [(e.type, e.message, e.data) for e in events] == [
        ("state", "queued", {"status": "queued"})
    ]


@pytest.mark.parametrize("start", list(JobStatus))
@pytest.mark.parametrize("to", list(JobStatus))
def test_only_declared_transitions_move(db: Session, start: JobStatus, to: JobStatus) -> None:
    row = job(db)
    _force(db, row.id, start)
    before = len(_events(db, row.id))
    moved = move(db, row.id, to, f"to {to}")
    assert moved == (start in TRANSITIONS[to])
    assert _status(db, row.id) == (to if moved else start)
    assert len(_events(db, row.id)) == before + int(moved)
    if moved and to in TERMINAL:
        assert db.get(Job, row.id).finished_at is not None  # type: ignore[union-attr]


def test_the_declared_moves_are_the_lifecycle_of_a_job() -> None:
    moves = {(start.value, to.value) for to, sources in TRANSITIONS.items() for start in sources}
    assert moves == {
        ("queued", "running"),  # a worker claims it
        ("running", "queued"),  # its lease expired: it runs again
        ("running", "succeeded"),
        ("queued", "failed"),
        ("running", "failed"),
        ("queued", "cancelled"),
        ("running", "cancelled"),
    }
    assert not any(final in sources for sources in TRANSITIONS.values() for final in TERMINAL)


def test_a_stale_lease_token_moves_nothing_and_writes_no_event(db: Session) -> None:
    row = job(db)
    _force(db, row.id, JobStatus.RUNNING, token=7)
    before = len(_events(db, row.id))
    assert not move(db, row.id, JobStatus.SUCCEEDED, "succeeded", token=6)
    assert _status(db, row.id) == "running" and len(_events(db, row.id)) == before
    assert move(db, row.id, JobStatus.SUCCEEDED, "succeeded", token=7)
    assert _status(db, row.id) == "succeeded"
    assert _events(db, row.id)[-1].data == {"status": "succeeded"}


def test_entering_a_state_sets_its_stage(db: Session) -> None:
    row = job(db)
    assert move(db, row.id, JobStatus.RUNNING, "running on w")
    db.expire_all()
    assert db.get(Job, row.id).stage == "preparing"  # type: ignore[union-attr]


def test_cancel_a_queued_job_at_once_and_a_running_one_by_request(db: Session) -> None:
    queued = job(db)
    request_cancel(db, queued.id)
    assert _status(db, queued.id) == "cancelled"
    assert _events(db, queued.id)[-1].message == "cancelled before it started"

    running = job(db)
    _force(db, running.id, JobStatus.RUNNING)
    request_cancel(db, running.id)
    request_cancel(db, running.id)  # asked twice: one request, one event
    db.expire_all()
    found = db.get(Job, running.id)
    assert found is not None and found.status == "running" and found.cancel_requested
    asked = [e for e in _events(db, running.id) if e.type == "message"]
    assert [e.message for e in asked] == ["cancel requested; stopping at the next training step"]


def test_fail_records_the_code_and_message(db: Session) -> None:
    row = job(db)
    assert fail(db, row.id, "teacher_crashed", "the teacher died")
    db.expire_all()
    found = db.get(Job, row.id)
    assert found is not None
    assert (found.status, found.error_code, found.error_message) == (
        "failed",
        "teacher_crashed",
        "the teacher died",
    )
    assert _events(db, row.id)[-1].data == {
        "status": "failed",
        "error": {"code": "teacher_crashed", "message": "the teacher died"},
    }
    assert not fail(db, row.id, "again", "a failed job does not fail twice")
