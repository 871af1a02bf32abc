"""Prometheus metrics, JSON logs with job ids, and readiness, on the production stack."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.support import (
    Service,
    TeacherFiles,
    base_env,
    free_port,
    spawn,
    wait_healthy,
)


def test_metrics_logs_and_readiness(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    service = production_service
    api = service.client
    assert api.get("/readyz").json() == {"status": "ready"}
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    job = api.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "training": {"epochs": 2},
        },
    ).json()
    assert service.wait(job["id"])["status"] == "succeeded"
    api.get(f"/v1/jobs/{job['id']}")
    assert api.get("/dashboard/static/style.css").status_code == 200

    text = api.get("/metrics").text
    assert 'distillery_jobs{status="succeeded"}' in text
    assert "distillery_queue_depth" in text
    assert "distillery_job_duration_seconds_count" in text
    assert 'route="/v1/jobs/{job_id}"' in text and 'method="GET"' in text
    assert 'route="/dashboard/static/{path}"' in text, "a mount is labelled by its prefix"
    assert job["id"] not in text, "routes are templates, not raw paths"

    api_lines = [
        json.loads(line)
        for line in service.logs[0].read_text().splitlines()
        if line.startswith("{")
    ]
    assert api_lines and all({"time", "level", "logger", "message"} <= set(e) for e in api_lines)
    worker_lines = [
        json.loads(line)
        for line in service.logs[1].read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(
        e.get("job_id") == job["id"] and e["message"] == "job succeeded" for e in worker_lines
    )
    assert any(
        e["message"] == "worker ready" and e["queue"] == service.env["DISTILLERY_QUEUE_NAME"]
        for e in worker_lines
    )
    worker_log = service.logs[1].read_text()
    assert "[tasks]" not in worker_log and "[queues]" not in worker_log, "no Celery banner"
    assert not re.search(r"^[WIE]\d{4} ", worker_log, re.M), "torch's logs go through JSON too"
    assert "SecurityWarning" not in "".join(
        line for line in worker_log.splitlines() if not line.startswith("{")
    ), "warnings are JSON lines"


def test_readyz_names_what_is_down(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(
        tmp_path / "data",
        DISTILLERY_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none",
        DISTILLERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        DISTILLERY_API_PORT=str(port),
    )
    service = Service(name="down", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp_path / "api.log"]
    service.processes = [spawn(["api"], env, service.logs[0])]
    try:
        wait_healthy(service)
        r = httpx.get(f"{service.base_url}/readyz", timeout=30)
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "database" in r.json()["detail"] and "broker" in r.json()["detail"]
        # /metrics still answers: HTTP latency, and that the job metrics could not be read.
        metrics = httpx.get(f"{service.base_url}/metrics", timeout=30)
        assert metrics.status_code == 200
        assert "distillery_database_up 0.0" in metrics.text
        assert 'route="/readyz"' in metrics.text and 'status="503"' in metrics.text
        # A route that needs the database answers 503 problem+json with Retry-After, and the
        # API keeps serving.
        for _ in range(2):
            jobs = httpx.get(f"{service.base_url}/v1/jobs", timeout=30)
            assert jobs.status_code == 503, jobs.text
            assert jobs.headers["content-type"].startswith("application/problem+json")
            assert jobs.json()["code"] == "service_unavailable"
            assert int(jobs.headers["retry-after"]) > 0
        assert service.alive()
    finally:
        service.stop()


def test_embedded_readiness_and_job_durations(
    embedded_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """SQLite and the filesystem broker: ready, and durations are computed in SQL there too."""
    service = embedded_service
    assert service.client.get("/readyz").json() == {"status": "ready"}
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    job = service.client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "training": {"epochs": 1},
            "baseline": False,
        },
    ).json()
    done = service.wait(job["id"])
    assert done["status"] == "succeeded"

    samples = _samples(service.client.get("/metrics").text)
    count = samples["distillery_job_duration_seconds_count"]
    assert count >= 1
    assert samples['distillery_job_duration_seconds_bucket{le="+Inf"}'] == count
    assert samples["distillery_job_duration_seconds_sum"] > 0
    assert samples["distillery_database_up"] == 1
    assert samples['distillery_jobs{status="succeeded"}'] >= 1
    assert samples["distillery_queue_depth"] == samples['distillery_jobs{status="queued"}']


def _samples(exposition: str) -> dict[str, float]:
    """Prometheus text format: `name{labels} value` lines, comments skipped."""
    samples = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples
