"""Jobs survive faults: dead and stalled workers, a broker that forgets, a database that drops
connections, an API that dies between commit and publish, retried submissions."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.fault.conftest import Cluster, Gate
from tests.support import PG_ADMIN, TeacherFiles

SLOW = {"epochs": 40, "batch_size": 8}


def _ids(cluster: Cluster, teacher: TeacherFiles, files: dict[str, Path]) -> dict[str, str]:
    """A ready teacher and a dataset, inspected by an inspection pool of their own (stopped
    again, so each test starts its job workers itself)."""
    cluster.add_worker("inspector", "--pools", "inspections")
    try:
        t = cluster.api.upload_teacher(teacher.onnx)
        d = cluster.api.upload_dataset(files["train"])
        assert t.status_code == 201 and d.status_code == 201, (t.text, d.text)
        assert t.json()["status"] == "ready", t.json()
    finally:
        cluster.kill_worker("inspector")
    return {"teacher_id": t.json()["id"], "train_dataset_id": d.json()["id"]}


def _submit(cluster: Cluster, ids: dict[str, str], **extra: Any) -> dict[str, Any]:
    # No transfer set: these jobs are timed by their epochs (SLOW), which the default set
    # would make four times as long.
    body = {**ids, "training": SLOW, "baseline": False, "transfer": None, **extra}
    r = cluster.api.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job: dict[str, Any] = r.json()
    return job


def _epoch_at_least(cluster: Cluster, job_id: str, epoch: int) -> dict[str, Any] | None:
    job: dict[str, Any] = cluster.api.client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] == "running" and job["epoch"] >= epoch else None


def _student_epochs(events: list[dict[str, Any]]) -> list[int]:
    return [
        e["data"]["epoch"]
        for e in events
        if e["type"] == "metrics" and e["data"].get("phase") == "student"
    ]


def _running_pid(cluster: Cluster, job_id: str) -> int:
    """The pid of the process that trains the job now (from its latest 'running' event)."""
    running = [
        e for e in cluster.events(job_id) if e["data"] and e["data"].get("status") == "running"
    ]
    return int(running[-1]["data"]["worker"].rsplit(":", 1)[1])


def _assert_succeeded_once(cluster: Cluster, job_id: str) -> dict[str, Any]:
    job = cluster.api.wait(job_id, timeout=240)
    assert job["status"] == "succeeded", (job["error"], cluster.api.tail())
    events = cluster.events(job_id)
    assert [e["data"]["status"] for e in events if e["type"] == "state"].count("succeeded") == 1
    artifacts = cluster.api.client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    names = [a["name"] for a in artifacts]
    assert len(names) == len(set(names)) and "student.onnx" in names
    # The final history is whole: every epoch once, in order, across the takeover.
    assert [h["epoch"] for h in job["metrics"]["history"]] == list(range(1, SLOW["epochs"] + 1))
    return job


def test_worker_killed_mid_training_resumes_from_checkpoint(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    cluster.add_worker("a")
    job = _submit(cluster, ids)
    reached = cluster.wait_for("epoch 3", lambda: _epoch_at_least(cluster, job["id"], 3))
    cluster.kill_worker("a")
    cluster.add_worker("b")

    done = _assert_succeeded_once(cluster, job["id"])
    assert done["attempts"] == 2
    events = cluster.events(job["id"])
    resumed = [e for e in events if e["message"].startswith("resumed fit0")]
    assert len(resumed) == 1 and resumed[0]["data"]["epoch"] >= reached["epoch"]
    requeued = [e for e in events if e["data"] and e["data"].get("reason") == "heartbeat_lost"]
    assert len(requeued) == 1
    # At most one epoch trained twice: the one the kill interrupted (its event may be lost).
    epochs = _student_epochs(events)
    assert sum(n - 1 for n in Counter(epochs).values()) <= 1, epochs


def test_stalled_worker_is_fenced_off(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    cluster.add_worker("a")
    job = _submit(cluster, ids)
    cluster.wait_for("epoch 2", lambda: _epoch_at_least(cluster, job["id"], 2))
    stalled = _running_pid(cluster, job["id"])
    os.kill(stalled, signal.SIGSTOP)  # past its lease: the reaper requeues, b takes over
    try:
        cluster.add_worker("b")
        cluster.wait_for(
            "a second attempt",
            lambda: cluster.api.client.get(f"/v1/jobs/{job['id']}").json()["attempts"] == 2,
        )
        cluster.wait_for(
            "epoch 1 of the takeover", lambda: _running_pid(cluster, job["id"]) != stalled
        )
    finally:
        os.kill(stalled, signal.SIGCONT)
    done = _assert_succeeded_once(cluster, job["id"])
    assert done["attempts"] == 2 and done["worker"] != f"{done['worker'].split(':')[0]}:{stalled}"
    # The stalled process woke up, found its lease gone and wrote nothing more.
    cluster.wait_for(
        "the stalled worker to notice",
        lambda: (
            "lease" in cluster.api.tail(400) and "stopping without writing" in cluster.api.tail(400)
        ),
    )


def test_redis_restart_loses_no_job(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    cluster.add_worker("a")
    running = _submit(cluster, ids, training={"epochs": 15, "batch_size": 8})
    queued = [_submit(cluster, ids, training={"epochs": 2}) for _ in range(2)]
    cluster.wait_for("a running job", lambda: _epoch_at_least(cluster, running["id"], 1))
    cluster.redis.stop()  # no persistence: the queued messages are gone
    time.sleep(1)
    cluster.redis.start()
    for job in [running, *queued]:
        done = cluster.api.wait(job["id"], timeout=240)
        assert done["status"] == "succeeded", (done["error"], cluster.api.tail())


def test_postgres_connections_terminated_during_a_job(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    cluster.add_worker("a")
    job = _submit(cluster, ids)
    cluster.wait_for("epoch 2", lambda: _epoch_at_least(cluster, job["id"], 2))
    killed = 0
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for _ in range(3):
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (cluster.db.name,),
            ).fetchall()
            killed += len(rows)
            time.sleep(1.5)
    assert killed >= 2
    done = _assert_succeeded_once(cluster, job["id"])
    assert done["attempts"] == 1  # it went on after reconnecting; nobody had to take over


def test_database_unreachable_when_a_worker_takes_the_job(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """The worker reaches Postgres through a gate that is shut when the job's message arrives:
    its claim fails after its own retries, the task is sent again a few seconds later, and
    once the database is back the job runs, once, long before a republish would resend it."""
    ids = _ids(cluster, digits_teacher, digits_files)
    db_url = cluster.env["DISTILLERY_DATABASE_URL"]
    gate = Gate(target_port=int(db_url.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]))
    gate.open()
    host = db_url.split("@", 1)[1].split("/", 1)[0]
    cluster.add_worker(
        "a",
        DISTILLERY_DATABASE_URL=db_url.replace(f"@{host}/", f"@127.0.0.1:{gate.port}/"),
        DISTILLERY_REPUBLISH_AFTER_SECONDS="600",  # only the task's own retry can save it
    )
    log = cluster.api.logs[-1]
    cluster.wait_for("the worker", lambda: "worker ready" in log.read_text(), timeout=120)
    gate.shut()
    try:
        started = time.monotonic()
        job = _submit(cluster, ids, training={"epochs": 2})  # the API's database is up
        cluster.wait_for(
            "a failed claim", lambda: "could not claim" in log.read_text(), timeout=120
        )
        assert cluster.api.client.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    finally:
        gate.open()
    done = cluster.api.wait(job["id"], timeout=180)
    assert done["status"] == "succeeded" and done["attempts"] == 1, (done["error"], log)
    assert time.monotonic() - started < 300
    states = [e["data"]["status"] for e in cluster.events(done["id"]) if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"]


def test_api_killed_between_commit_and_publish(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    doomed = cluster.start_api(DISTILLERY_FAILPOINT="after_job_commit")
    try:
        try:
            r = doomed.client.post("/v1/jobs", json={**ids, "training": {"epochs": 2}})
            raise AssertionError(f"the API answered {r.status_code} instead of dying")
        except httpx.TransportError:
            pass
        doomed.processes[0].wait(timeout=10)
    finally:
        doomed.stop()
    jobs = cluster.api.client.get("/v1/jobs").json()["data"]
    assert len(jobs) == 1 and jobs[0]["status"] == "queued"
    cluster.add_worker("a")  # its maintenance loop publishes what the API could not
    done = cluster.api.wait(jobs[0]["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done["error"]
    states = [e["data"]["status"] for e in cluster.events(done["id"]) if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"]


def test_concurrent_retries_with_one_idempotency_key(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    body = {**ids, "training": {"epochs": 1}}
    headers = {"Idempotency-Key": "retry-me-7"}

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=cluster.api.base_url, timeout=60) as client:
            return client.post("/v1/jobs", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(submit, range(20)))
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 19
    assert len(cluster.api.client.get("/v1/jobs").json()["data"]) == 1

    other = cluster.api.client.post(
        "/v1/jobs", json={**body, "training": {"epochs": 2}}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"

    # Uploads too: a retried upload is one dataset.
    def upload(_: int) -> httpx.Response:
        with httpx.Client(base_url=cluster.api.base_url, timeout=60) as client:
            with digits_files["train"].open("rb") as fh:
                return client.post(
                    "/v1/datasets",
                    files={"file": ("train.npz", fh)},
                    headers={"Idempotency-Key": "upload-1"},
                )

    with ThreadPoolExecutor(max_workers=5) as pool:
        uploads = list(pool.map(upload, range(5)))
    assert {r.status_code for r in uploads} == {201}
    assert len({r.json()["id"] for r in uploads}) == 1
    with digits_files["test"].open("rb") as fh:
        different = cluster.api.client.post(
            "/v1/datasets",
            files={"file": ("train.npz", fh)},
            headers={"Idempotency-Key": "upload-1"},
        )
    assert different.status_code == 422


def test_time_limit_fails_the_job_with_a_code(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    cluster.add_worker("a")
    job = _submit(cluster, ids, training={"epochs": 1000, "batch_size": 8, "time_limit_seconds": 6})
    done = cluster.api.wait(job["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "time_limit_exceeded" and done["error"]["message"]
    assert done["epoch"] < 1000


def test_requeue_gives_up_after_max_attempts(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """A job that kills every worker that takes it fails with worker_lost, not forever."""
    ids = _ids(cluster, digits_teacher, digits_files)
    job = _submit(cluster, ids)
    for attempt in range(1, 4):
        cluster.add_worker(f"w{attempt}")
        cluster.wait_for(
            f"attempt {attempt}",
            lambda attempt=attempt: (
                _epoch_at_least(cluster, job["id"], 1)
                and cluster.api.client.get(f"/v1/jobs/{job['id']}").json()["attempts"] == attempt
            ),
        )
        cluster.kill_worker(f"w{attempt}")
    cluster.add_worker("reaper")
    done = cluster.api.wait(job["id"], timeout=60)
    assert done["status"] == "failed" and done["error"]["code"] == "worker_lost", done


def test_active_job_quota_per_tenant(
    cluster: Cluster, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    ids = _ids(cluster, digits_teacher, digits_files)
    capped = cluster.start_api(DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT="2")
    try:
        body = {**ids, "training": {"epochs": 1}}
        first = [capped.client.post("/v1/jobs", json=body) for _ in range(2)]
        assert [r.status_code for r in first] == [201, 201]  # no worker: both stay queued
        third = capped.client.post("/v1/jobs", json=body)
        assert third.status_code == 429, third.text
        assert int(third.headers["Retry-After"]) > 0
        assert third.json()["code"] == "too_many_active_jobs"
        capped.client.post(f"/v1/jobs/{first[0].json()['id']}/cancel")
        assert capped.client.post("/v1/jobs", json=body).status_code == 201
    finally:
        capped.stop()
