"""Cancel, list and poll jobs through HTTP on the production stack."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import Service, TeacherFiles


def _ids(service: Service, teacher: TeacherFiles, files: dict[str, Path]) -> dict[str, str]:
    t = service.upload_teacher(teacher.onnx).json()
    d = service.upload_dataset(files["train"]).json()
    return {"teacher_id": t["id"], "train_dataset_id": d["id"]}


def test_cancel_running_and_queued_jobs(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    service = production_service
    api = service.client
    ids = _ids(service, digits_teacher, digits_files)
    long_body = {**ids, "training": {"epochs": 1000, "batch_size": 16}}
    running = api.post("/v1/jobs", json=long_body).json()
    queued = api.post("/v1/jobs", json=long_body).json()  # one worker slot: this one waits

    job = service.wait(running["id"], until={"running"}, timeout=120)
    while job["epoch"] < 1:
        time.sleep(0.1)
        job = api.get(f"/v1/jobs/{running['id']}").json()

    r = api.post(f"/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"

    r = api.post(f"/v1/jobs/{running['id']}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    cancelled_at = time.monotonic()
    job = service.wait(running["id"], timeout=60)
    assert job["status"] == "cancelled", job
    # The worker learns of it at its next heartbeat (2 s) and stops before the next step.
    assert time.monotonic() - cancelled_at < 10
    assert job["epoch"] < 1000 and job["finished_at"] is not None
    assert api.get(f"/v1/jobs/{running['id']}/artifacts").json()["data"] == []
    events = api.get(f"/v1/jobs/{running['id']}/events", params={"limit": 1000}).json()["data"]
    messages = [e["message"] for e in events]
    assert "cancel requested; stopping at the next training step" in messages
    assert events[-1]["type"] == "state" and events[-1]["data"]["status"] == "cancelled"
    queued_events = api.get(f"/v1/jobs/{queued['id']}/events").json()["data"]
    assert [e["data"]["status"] for e in queued_events] == ["queued", "cancelled"]

    # The cancelled queued job never runs, even when its message reaches the worker.
    time.sleep(2)
    assert api.get(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    # Cancelling a finished job changes nothing.
    again = api.post(f"/v1/jobs/{running['id']}/cancel").json()
    assert again["status"] == "cancelled"


def test_list_jobs_newest_first_paginated(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    service = production_service
    api = service.client
    ids = _ids(service, digits_teacher, digits_files)
    made = []
    for _ in range(3):
        job = api.post("/v1/jobs", json={**ids, "training": {"epochs": 1}}).json()
        made.append(job["id"])
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = api.get("/v1/jobs", params=params).json()
        seen.extend(j["id"] for j in page["data"])
        if not page["has_more"]:
            break
        after = page["next_after"]
    assert len(seen) == len(set(seen))
    positions = [seen.index(i) for i in made]
    assert positions == sorted(positions, reverse=True), "newest first"
    for job_id in made:
        service.wait(job_id)
    # Listed above while queued or running (each rendering cached by row version), now ended:
    # the list and each job's own answer show the row as it is now, identically.
    listed = {j["id"]: j for j in api.get("/v1/jobs", params={"limit": 100}).json()["data"]}
    for job_id in made:
        assert listed[job_id] == api.get(f"/v1/jobs/{job_id}").json()
        assert listed[job_id]["status"] == "succeeded" and listed[job_id]["metrics"]["history"]
    ended = api.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()["data"]
    assert set(made) <= {j["id"] for j in ended}
    assert all(j["status"] == "succeeded" for j in ended)
    assert api.get("/v1/jobs", params={"after": "job_nope"}).status_code == 422


def test_events_list_and_stream(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    import json

    service = production_service
    api = service.client
    ids = _ids(service, digits_teacher, digits_files)
    job = api.post("/v1/jobs", json={**ids, "training": {"epochs": 3}}).json()

    # The stream follows the job live and ends by itself when the job has ended.
    streamed = []
    with api.stream("GET", f"/v1/jobs/{job['id']}/events/stream") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                streamed.append(json.loads(line[len("data: ") :]))
    done = service.wait(job["id"])
    assert done["status"] == "succeeded", done["error"]

    events = []
    after = None
    while True:
        params = {"limit": 4, **({"after": after} if after else {})}
        page = api.get(f"/v1/jobs/{job['id']}/events", params=params).json()
        events.extend(page["data"])
        if not page["has_more"]:
            break
        after = page["next_after"]
    assert [e["id"] for e in streamed] == [e["id"] for e in events]
    states = [e["data"]["status"] for e in events if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    stages = [e["data"]["stage"] for e in events if e["type"] == "message" and "stage" in e["data"]]
    # The default transfer set is synthesized before the teacher labels the rows.
    assert stages[:3] == ["loading", "transfer_set", "teacher_outputs"]
    assert "exporting" in stages
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics if m["phase"] == "student"] == [1, 2, 3]
    assert [m["epoch"] for m in metrics if m["phase"] == "scratch"] == [1, 2, 3]
    assert all("validation_accuracy" in m for m in metrics)

    # Resuming after the last event seen gives nothing new once the job has ended.
    last = events[-1]["id"]
    resumed = api.get(f"/v1/jobs/{job['id']}/events/stream", headers={"Last-Event-ID": str(last)})
    assert "data: " not in resumed.text
    assert api.get("/v1/jobs/job_nope/events").status_code == 404
