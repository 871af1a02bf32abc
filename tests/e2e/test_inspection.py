"""Uploaded teachers are inspected by workers, in a pool of their own: an upload answers
`processing` until one has, a worker that is down leaves it so (and /readyz says why), and an
upload is inspected while every job slot trains."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillery import Client, DistilleryError
from tests.support import (
    REDIS_URL,
    ROOT,
    PostgresDatabase,
    Service,
    TeacherFiles,
    base_env,
    free_port,
    spawn,
    wait_healthy,
)


def _api_without_workers(tmp: Path, db: PostgresDatabase) -> Service:
    port = free_port()
    env = base_env(
        tmp / "data",
        DISTILLERY_DATABASE_URL=db.url,
        DISTILLERY_BROKER_URL=REDIS_URL,
        DISTILLERY_QUEUE_NAME=f"distillery-inspect-{secrets.token_hex(4)}",
        DISTILLERY_API_PORT=str(port),
        DISTILLERY_UPLOAD_WAIT_SECONDS="1",
        DISTILLERY_REAPER_INTERVAL_SECONDS="1",
    )
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    service = Service(name="no-workers", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / "api.log"]
    service.processes = [spawn(["api"], env, service.logs[0])]
    wait_healthy(service)
    return service


def test_uploads_wait_for_a_worker_and_readyz_says_why(
    tmp_path: Path, postgres_database: PostgresDatabase, digits_teacher: TeacherFiles
) -> None:
    service = _api_without_workers(tmp_path, postgres_database)
    try:
        pending = service.upload_teacher(digits_teacher.onnx)
        assert pending.status_code == 201, pending.text
        body = pending.json()
        assert body["status"] == "processing" and body["input_shape"] is None, body
        ready = service.client.get("/readyz")
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        inspect_queue = service.env["DISTILLERY_QUEUE_NAME"] + ".inspect"
        assert "workers" in detail and inspect_queue in detail and "processing" in detail
        refused = service.client.post(
            "/v1/jobs", json={"teacher_id": body["id"], "train_dataset_id": "ds_x"}
        )
        assert refused.status_code == 422
        assert refused.json()["code"] == "teacher_not_ready"

        with Client(service.base_url) as client:
            with pytest.raises(DistilleryError) as waited:
                client.wait_teacher(body["id"], timeout=1)
            assert waited.value.code == "inspection_pending"
            # Only an inspection pool: the upload is answered; the jobs queue is still unserved.
            log = tmp_path / "inspector.log"
            service.logs.append(log)
            service.processes.append(
                spawn(["worker", "--name", "i", "--pools", "inspections"], service.env, log)
            )
            teacher = client.wait_teacher(body["id"], timeout=120)
        assert teacher["status"] == "ready" and teacher["input_shape"] == [1, 8, 8]
        assert teacher["num_classes"] == 10 and teacher["error"] is None
        still = service.client.get("/readyz").json()["detail"]
        assert inspect_queue not in still and "jobs stay queued" in still
    finally:
        service.stop()


def test_an_upload_is_inspected_while_every_job_slot_trains(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    service = production_service
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    body = {
        "teacher_id": teacher["id"],
        "train_dataset_id": train["id"],
        "training": {"epochs": 200, "batch_size": 8},
        "baseline": False,
    }
    job = service.client.post("/v1/jobs", json=body).json()
    try:
        service.wait(job["id"], until={"running"})
        deadline = time.monotonic() + 120
        while service.client.get(f"/v1/jobs/{job['id']}").json()["stage"] != "training":
            assert time.monotonic() < deadline, "the job never started training"
            time.sleep(0.5)
        # The only job slot (concurrency 1) is training; the inspection pool still answers.
        again = service.upload_teacher(digits_teacher.pt2)
        assert again.status_code == 201 and again.json()["status"] == "ready", again.text
        assert service.client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
    finally:
        service.client.post(f"/v1/jobs/{job['id']}/cancel")
        service.wait(job["id"], timeout=120)
