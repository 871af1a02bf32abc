"""A teacher that asks for too much memory fails its own job; the worker goes on with the next.

Inspection probes 8 rows, so a model whose memory grows with the batch passes it (as a hostile
one would: it can behave until it is given real work) and asks for ~8 GiB on the job's first
batch, twice the worker's default teacher limit (DISTILLERY_TEACHER_MEMORY_BYTES, 4 GiB). One
that needs too much already on the probe is refused at upload with a 422."""

from __future__ import annotations

from pathlib import Path

from tests.support import Service
from tests.worker.hostile import hungry_onnx, mlp_onnx

JOB = {
    "student": {"architecture": "mlp", "hidden_sizes": [16]},
    "training": {"epochs": 2, "batch_size": 128},
    "baseline": False,
}


def test_memory_hungry_teacher_fails_its_job_only(
    production_service: Service, digits_files: dict[str, Path], tmp_path: Path
) -> None:
    service = production_service
    api = service.client

    # Needs 8 GiB on the 8-row probe: refused at upload, naming the limit.
    r = service.upload_teacher(hungry_onnx(tmp_path / "hog.onnx", 2**28, free_rows=0))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "teacher_resource_limit", problem
    assert "DISTILLERY_TEACHER_MEMORY_BYTES" in problem["detail"]
    assert "file" in [e["field"] for e in problem["errors"]]

    # (512 - 8) rows x 2^22 floats: 7.9 GiB on the job's first batch of 512.
    r = service.upload_teacher(hungry_onnx(tmp_path / "sleeper.onnx", 2**22))
    assert r.status_code == 201, r.text
    sleeper = r.json()
    normal = service.upload_teacher(mlp_onnx(tmp_path / "normal.onnx")).json()
    train = service.upload_dataset(digits_files["train"]).json()

    r = api.post(
        "/v1/jobs", json={"teacher_id": sleeper["id"], "train_dataset_id": train["id"], **JOB}
    )
    assert r.status_code == 201, r.text
    failed = service.wait(r.json()["id"], timeout=120)
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "teacher_resource_limit", failed["error"]
    assert "more memory than its limit of 4.0 GiB" in failed["error"]["message"]

    r = api.post(
        "/v1/jobs", json={"teacher_id": normal["id"], "train_dataset_id": train["id"], **JOB}
    )
    assert r.status_code == 201, r.text
    done = service.wait(r.json()["id"], timeout=300)
    assert done["status"] == "succeeded", (done.get("error"), service.tail())
    # One worker service ran both (each job in its own pool child): it is still up.
    assert done["worker"].split(":")[0] == failed["worker"].split(":")[0]
    assert all(process.poll() is None for process in service.processes)
    assert done["metrics"]["latency_ms"]["batch_1"]["teacher"] > 0
    assert service.alive()
