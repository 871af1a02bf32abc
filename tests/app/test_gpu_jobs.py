"""Jobs that ask for a GPU, on real Postgres, each test rolled back: refused while no live
worker serves the GPU queue, accepted once one does; /readyz's queues never include it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app import workers
from app.errors import InvalidInput
from app.jobs.spec import JobSpec
from app.jobs.validation import validate_submission
from app.models import WorkerSeen, utcnow
from app.settings import Settings
from tests.support import rows
from tests.support.rows import TENANT

SETTINGS = Settings(queue_name="jobs-under-test", reaper_interval_seconds=5)


def _gpu_spec(session: Session) -> JobSpec:
    body = rows.job_body(rows.teacher(session), rows.dataset(session), resources={"gpu": True})
    return body.to_spec()


def test_the_gpu_queue_is_named_after_the_job_queue_unless_set() -> None:
    assert SETTINGS.resolved_gpu_queue_name == "jobs-under-test-gpu"
    assert SETTINGS.job_queue(gpu=True) == "jobs-under-test-gpu"
    assert SETTINGS.job_queue(gpu=False) == "jobs-under-test"
    named = Settings(queue_name="a", gpu_queue_name="big-cards")
    assert named.job_queue(gpu=True) == "big-cards"


def test_a_job_asks_for_no_gpu_by_default(db: Session) -> None:
    spec = rows.job_body(rows.teacher(db), rows.dataset(db)).to_spec()
    assert spec.resources.gpu is False
    assert JobSpec.model_validate(spec.model_dump(mode="json")).resources.gpu is False


def test_a_gpu_job_is_refused_while_no_gpu_worker_is_alive(db: Session) -> None:
    spec = _gpu_spec(db)
    with pytest.raises(InvalidInput) as caught:
        validate_submission(db, spec, TENANT, SETTINGS)
    assert (caught.value.field, caught.value.code) == ("resources.gpu", "gpu_unavailable")
    assert "none has been seen" in caught.value.detail
    assert "distillery worker --gpu" in caught.value.detail
    # A CPU worker does not count; a GPU worker silent for too long does not either.
    workers.seen(db, "worker@host", SETTINGS.queue_name)
    workers.seen(db, "worker-gpu@host", SETTINGS.resolved_gpu_queue_name)
    db.execute(
        update(WorkerSeen)
        .where(WorkerSeen.name == "worker-gpu@host")
        .values(last_seen=utcnow() - timedelta(minutes=5))
    )
    with pytest.raises(InvalidInput, match="one was last seen at"):
        validate_submission(db, spec, TENANT, SETTINGS)


def test_a_gpu_job_is_accepted_while_a_gpu_worker_is_alive(db: Session) -> None:
    workers.seen(db, "worker-gpu@host", SETTINGS.resolved_gpu_queue_name)
    view = validate_submission(db, _gpu_spec(db), TENANT, SETTINGS)
    assert view.input_shape == [1, 8, 8]


def test_readiness_never_waits_for_a_gpu_worker(db: Session) -> None:
    workers.seen(db, "worker@host", SETTINGS.queue_name)
    workers.seen(db, "worker.inspect@host", SETTINGS.inspection_queue_name)
    assert workers.unserved_queues(db, SETTINGS) == []
    assert SETTINGS.resolved_gpu_queue_name not in workers.served_queues(db, SETTINGS)
