"""The relay's lease expiry on real Postgres, each test rolled back: silent workers' jobs
are requeued with a new lease token and a message, failed after too many attempts, or
cancelled when a cancel was asked; live ones are left alone."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db import make_engine
from app.jobs.relay import expire_leases
from app.models import Job, JobEvent, OutboxMessage, utcnow
from app.outbox import enqueue
from app.settings import Settings
from tests.support.db import PostgresDatabase
from tests.support.rows import job

SETTINGS = Settings(lease_timeout_seconds=60, max_attempts=3, republish_after_seconds=300)


def _running(session: Session, *, silent_for: float, attempts: int = 1, **values: object) -> Job:
    row = job(session)
    session.execute(
        update(Job)
        .where(Job.id == row.id)
        .values(
            status="running",
            stage="training",
            lease_token=5,
            attempts=attempts,
            worker="host:1",
            heartbeat_at=utcnow() - timedelta(seconds=silent_for),
            **values,
        )
    )
    session.expire_all()
    return row


def _job(session: Session, job_id: str) -> Job:
    session.expire_all()
    found = session.get(Job, job_id)
    assert found is not None
    return found


def _messages(session: Session, job_id: str) -> int:
    return len(list(session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id))))


def test_a_silent_job_is_requeued_with_a_new_token_and_a_message(db: Session) -> None:
    row = _running(db, silent_for=120)
    before = _messages(db, row.id)
    done = expire_leases(db, SETTINGS)
    assert done.requeued == [row.id]
    found = _job(db, row.id)
    assert (found.status, found.stage, found.lease_token) == ("queued", "queued", 6)
    assert _messages(db, row.id) == before + 1


def test_a_live_job_is_left_alone(db: Session) -> None:
    row = _running(db, silent_for=5)
    done = expire_leases(db, SETTINGS)
    assert row.id not in done.requeued + done.failed + done.cancelled
    assert _job(db, row.id).lease_token == 5


def test_after_max_attempts_the_job_fails_with_worker_lost(db: Session) -> None:
    row = _running(db, silent_for=120, attempts=3)
    done = expire_leases(db, SETTINGS)
    found = _job(db, row.id)
    assert done.failed == [row.id]
    assert (found.status, found.error_code) == ("failed", "worker_lost")
    assert "gave up after 3 attempts" in (found.error_message or "")


def test_a_silent_job_with_a_cancel_asked_is_cancelled(db: Session) -> None:
    row = _running(db, silent_for=120, cancel_requested=True)
    done = expire_leases(db, SETTINGS)
    assert done.cancelled == [row.id]
    assert _job(db, row.id).status == "cancelled"


def test_a_queued_job_whose_message_is_old_gets_another(db: Session) -> None:
    row = job(db)
    enqueue(db, row.id)
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.job_id == row.id)
        .values(published_at=utcnow() - timedelta(seconds=600))
    )
    done = expire_leases(db, SETTINGS)
    assert done.republished == [row.id]
    assert _messages(db, row.id) == 2


def test_a_worker_stopped_inside_a_transaction_does_not_hide_its_job(
    migrated_database: PostgresDatabase,
) -> None:
    """A worker frozen (SIGSTOP) between its heartbeat's UPDATE and COMMIT holds the job row's
    lock. The server ends such an idle transaction (the engine's
    idle_in_transaction_session_timeout), so the relay's SKIP LOCKED finds the job again."""
    engine = make_engine(migrated_database.url, idle_in_transaction_seconds=1)
    try:
        with Session(engine) as setup:
            job_id = _running(setup, silent_for=120).id
            setup.commit()
        frozen = Session(engine)
        frozen.execute(update(Job).where(Job.id == job_id).values(worker="host:frozen"))
        with Session(engine) as relay_session:
            assert expire_leases(relay_session, SETTINGS).requeued == []  # locked: skipped
            relay_session.rollback()
            time.sleep(2.0)  # the frozen session stays idle in its transaction past the timeout
            assert expire_leases(relay_session, SETTINGS).requeued == [job_id]
            relay_session.commit()
        # The frozen worker wakes to a closed connection.
        with pytest.raises(DBAPIError, match="idle-in-transaction"):
            frozen.commit()
        frozen.close()
    finally:
        with Session(engine) as cleanup:
            cleanup.execute(delete(OutboxMessage).where(OutboxMessage.job_id == job_id))
            cleanup.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            cleanup.execute(delete(Job).where(Job.id == job_id))
            cleanup.commit()
        engine.dispose()
