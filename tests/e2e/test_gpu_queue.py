"""Jobs that ask for a GPU go to the GPU queue, which only GPU workers serve (Celery routing),
on the production stack: Postgres, Redis, the API, a CPU worker, and a worker started with
`distillery worker --gpu` (here without a GPU, so it trains on the CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.support import Service, TeacherFiles, signal_group, spawn

TINY_JOB: dict[str, Any] = {
    "training": {"epochs": 2},
    "transfer": None,
    "quantize": False,
    "baseline": False,
}


@pytest.fixture
def gpu_worker(
    production_service: Service, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A second worker on the same stack, serving the GPU queue: started when the test asks."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        args = ["worker", "--gpu", "--name", "gpu", "--pools", "jobs"]
        started.append(spawn(args, production_service.env, tmp_path / "gpu-worker.log"))
        return started[0]

    yield start
    for proc in started:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)


def _submit_until_accepted(api: httpx.Client, body: dict[str, Any], log: Path) -> Any:
    """The GPU worker is seen alive once its relay has run: until then, 422."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = api.post("/v1/jobs", json=body)
        if r.status_code == 201:
            return r.json()
        assert r.status_code == 422 and r.json()["code"] == "gpu_unavailable", r.text
        time.sleep(0.5)
    raise AssertionError(f"no GPU worker seen in 120 s:\n{log.read_text()[-3000:]}")


def _process_group(job: dict[str, Any]) -> int:
    """The process group of the worker process that ran the job (worker = host:pid)."""
    return os.getpgid(int(job["worker"].rsplit(":", 1)[1]))


def test_a_gpu_job_runs_on_the_gpu_worker_and_nowhere_else(
    production_service: Service,
    gpu_worker: Callable[[], subprocess.Popen[bytes]],
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    service, api = production_service, production_service.client
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    body = {"teacher_id": teacher["id"], "train_dataset_id": train["id"], **TINY_JOB}
    gpu_body = {**body, "resources": {"gpu": True}}

    # No GPU worker: the deployment is ready (GPUs are optional), a GPU job is refused.
    assert api.get("/readyz").status_code == 200
    r = api.post("/v1/jobs", json=gpu_body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "gpu_unavailable"
    assert [e["field"] for e in problem["errors"]] == ["resources.gpu"]
    assert "distillery worker --gpu" in problem["detail"]

    worker = gpu_worker()
    gpu_job = _submit_until_accepted(api, gpu_body, tmp_path / "gpu-worker.log")
    assert gpu_job["resources"] == {"gpu": True}
    cpu_job = api.post("/v1/jobs", json=body).json()
    assert cpu_job["resources"] == {"gpu": False}
    gpu_job, cpu_job = service.wait(gpu_job["id"]), service.wait(cpu_job["id"])
    assert gpu_job["status"] == cpu_job["status"] == "succeeded", (gpu_job, cpu_job)

    assert _process_group(gpu_job) == worker.pid  # a child of the GPU worker ran it
    assert _process_group(cpu_job) == service.processes[1].pid  # the CPU worker's
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert gpu_job["metrics"]["device"] == device
    runtime = gpu_job["metrics"]["teacher"]["runtime"]
    assert runtime["device"] == "cpu" or device == "cuda"
    assert runtime["batch_rows"] >= 1 and runtime["threads"] >= 1
    # Rows the teacher's process labelled, unless the worker's cache had them all.
    misses = gpu_job["metrics"]["teacher_output_cache"]["misses"]
    assert (runtime["labelled_rows"] > 0) == (misses > 0)
    events = api.get(f"/v1/jobs/{gpu_job['id']}/events").json()["data"]
    said = [e for e in events if (e["data"] or {}).get("teacher_runtime")]
    assert said and said[0]["message"].startswith(f"teacher {teacher['id']} labels on ")
