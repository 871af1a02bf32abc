"""Polls answered without a query while Postgres says nothing changed (app/jobs/live.py): the
trigger announces what answers show and nothing else, a render that raced a change is not
kept, a lost connection keeps nothing until it is back, and the API serves a changed job at
once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, pool, text

from app.jobs.live import APPLICATION_NAME, Listener, LiveJobs
from app.models import Job
from tests.support import PostgresDatabase, Service, TeacherFiles
from tests.support.db import PG_ADMIN


def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_a_render_that_raced_a_change_is_not_kept() -> None:
    live = LiveJobs()
    assert live.token() is None  # not listening: nothing is kept
    live.keep_job(live.token(), "job_a", "t", b"old")
    assert live.job("job_a", "t") is None
    live.listen(True)
    token = live.token()
    live.changed("t", "job_a")  # the job changed while this render was reading it
    live.keep_job(token, "job_a", "t", b"old")
    live.keep_page(token, "t", (20, None, None), b"old page")
    assert live.job("job_a", "t") is None and live.page("t", (20, None, None)) is None
    token = live.token()
    live.keep_job(token, "job_a", "t", b"new")
    live.keep_page(token, "t", (20, None, None), b"new page")
    assert live.job("job_a", "t") == b"new" and live.job("job_a", "other tenant") is None
    assert live.page("t", (20, None, None)) == b"new page"
    live.changed("t", "job_b")  # another job of the tenant: its pages go, job_a stays
    assert live.page("t", (20, None, None)) is None and live.job("job_a", "t") == b"new"
    live.listen(False)  # a lost connection forgets everything
    assert live.job("job_a", "t") is None
    live.listen(True)
    live.keep_job(token, "job_a", "t", b"new")  # taken before the connection came back
    assert live.job("job_a", "t") is None


@pytest.fixture
def listening(migrated_database: PostgresDatabase) -> Iterator[tuple[LiveJobs, Listener]]:
    live = LiveJobs()
    listener = Listener(migrated_database.url, live)
    listener.start()
    _until(lambda: live.listening)
    yield live, listener
    listener.stop()


def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_the_trigger_announces_what_answers_show(
    migrated_database: PostgresDatabase, listening: tuple[LiveJobs, Listener]
) -> None:
    live, _ = listening
    url = migrated_database.url
    insert = (
        "INSERT INTO jobs (id, tenant_id, created_at, status, stage, epoch, spec, "
        "cancel_requested, lease_token, attempts) VALUES ('job_live', 'acme', now(), "
        "'queued', 'queued', 0, '{}', false, 0, 0)"
    )
    try:
        _execute(url, insert)
        _until(lambda: "job_live" in live.changed_jobs)
        seen = live.changed_jobs["job_live"]
        _execute(url, "UPDATE jobs SET heartbeat_at = now() WHERE id = 'job_live'")
        _execute(url, "UPDATE jobs SET epoch = 3 WHERE id = 'job_live'")
        _until(lambda: live.changed_jobs["job_live"] > seen)
        # Two notifications at most (the insert, the epoch): the heartbeat alone said nothing.
        assert live.generation - live.since <= 2
        assert list(live.changed_tenants) == ["acme"]
    finally:
        _execute(url, "DELETE FROM jobs WHERE id = 'job_live'")


def test_the_trigger_covers_every_column_but_the_heartbeat(
    migrated_database: PostgresDatabase,
) -> None:
    """UPDATE OF <columns>: a column added to jobs without being added to the trigger would
    change answers that no notification drops."""
    engine = create_engine(migrated_database.url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        covered = set(
            conn.execute(
                text(
                    "SELECT event_object_column FROM information_schema.triggered_update_columns"
                    " WHERE trigger_name = 'jobs_changed'"
                )
            ).scalars()
        )
    engine.dispose()
    assert covered == {c.name for c in Job.__table__.columns} - {"heartbeat_at"}


def test_a_lost_connection_keeps_nothing_until_it_is_back(
    migrated_database: PostgresDatabase, listening: tuple[LiveJobs, Listener]
) -> None:
    live, _ = listening
    token = live.token()
    live.keep_job(token, "job_x", "t", b"kept")
    assert live.job("job_x", "t") == b"kept"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND datname = %s",
            (APPLICATION_NAME, migrated_database.name),
        )
    _until(lambda: live.job("job_x", "t") is None)
    _until(lambda: live.listening)  # back, and empty
    assert live.job("job_x", "t") is None


def test_polls_of_an_unchanged_job_skip_the_database_and_see_a_change_at_once(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """The API answers repeated polls from what it keeps (distillery_job_answers_total says
    so), and a change written straight into the row is in the answers within moments."""
    service = production_service
    api = service.client
    body = {
        "teacher_id": service.upload_teacher(digits_teacher.onnx).json()["id"],
        "train_dataset_id": service.upload_dataset(digits_files["train"]).json()["id"],
        "training": {"epochs": 1},
        "transfer": None,
        "quantize": False,
    }
    job_id = api.post("/v1/jobs", json=body).json()["id"]
    assert service.wait(job_id)["status"] == "succeeded", service.tail()
    before = _answers(service)
    for _ in range(50):
        assert api.get(f"/v1/jobs/{job_id}").status_code == 200
    after = _answers(service)
    assert after["live"] - before["live"] >= 45, (before, after)
    _execute(
        service.env["DISTILLERY_DATABASE_URL"],
        f"UPDATE jobs SET stage = 'renamed by the test' WHERE id = '{job_id}'",
    )
    _until(lambda: api.get(f"/v1/jobs/{job_id}").json()["stage"] == "renamed by the test", 2.0)
    listed = api.get("/v1/jobs", params={"limit": 5}).json()["data"]
    assert [j["stage"] for j in listed if j["id"] == job_id] == ["renamed by the test"]


def _answers(service: Service) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in service.client.get("/metrics").text.splitlines():
        if line.startswith("distillery_job_answers_total{"):
            source = line.split('source="')[1].split('"')[0]
            found[source] = float(line.rsplit(" ", 1)[1])
    return found


def test_a_running_jobs_curves_are_answered_as_stored() -> None:
    """A running job's metrics (its curves so far) are spliced in as the worker stored them;
    the answer is still a valid JobPublic, equal to the validated rendering."""
    from datetime import UTC, datetime

    from app.jobs.metrics import JobProgress
    from app.jobs.public_view import render
    from app.jobs.schemas import JobPublic
    from app.jobs.spec import JobCreate

    spec = JobCreate.model_validate({"teacher_id": "tch_a", "train_dataset_id": "ds_a"}).to_spec()
    epoch = {"epoch": 1, "loss": 0.5, "hard_loss": 0.4, "soft_loss": 0.3,
             "validation_accuracy": None, "seconds": 0.1}
    progress = {"latest": epoch, "latest_scratch": None, "history": [epoch], "history_scratch": []}
    # As the worker writes it: JobProgress dumped whole.
    stored = json.dumps(JobProgress.model_validate(progress).model_dump(mode="json"))
    job = Job(id="job_a", tenant_id="t", status="running", stage="training", epoch=1,
              spec=spec.model_dump(mode="json"), created_at=datetime.now(UTC),
              cancel_requested=False, attempts=1, lease_token=1)
    spliced = json.loads(render(job, stored))
    assert spliced["metrics"] == json.loads(stored) and spliced["stage"] == "training"
    assert JobPublic.model_validate(spliced).model_dump(mode="json") == spliced
