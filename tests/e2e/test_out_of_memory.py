"""A job that runs out of memory on its worker fails with error.code out_of_memory.

Submission refuses jobs estimated over DISTILLERY_MAX_JOB_MEMORY_BYTES, so to reach a worker's
real limit this test raises the API's limits and gives a worker of its own (on a queue of its
own, beside the production stack) an address-space limit of 6 GiB: the issue's student of 8.6
billion parameters then fails its first allocation inside torch, as it would on a worker
whose memory the setting overstated. The worker goes on: the next job succeeds."""

from __future__ import annotations

import resource
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.live import extra_api
from tests.support import ROOT, Service, TeacherFiles

WORKER_MEMORY_BYTES = 6 * 1024**3


@pytest.fixture
def roomy_stack(production_service: Service, tmp_path: Path) -> Iterator[Service]:
    """An API that lets any job through and a memory-limited worker, on their own queue."""
    settings = {
        "DISTILLERY_QUEUE_NAME": f"oom-{secrets.token_hex(4)}",
        "DISTILLERY_MAX_JOB_MEMORY_BYTES": str(2**50),
        "DISTILLERY_MAX_STUDENT_PARAMETERS": str(10**12),
    }
    env = {**production_service.env, **settings}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    # Set before Celery has forked its pool (seconds away): every child inherits it.
    resource.prlimit(worker.pid, resource.RLIMIT_AS, (WORKER_MEMORY_BYTES,) * 2)
    api = extra_api(production_service, tmp_path, **settings)
    api.processes.append(worker)
    api.logs.append(tmp_path / "worker.log")
    try:
        yield api
    finally:
        api.stop()
        log.close()


def test_a_job_out_of_memory_fails_with_out_of_memory(
    roomy_stack: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    api = roomy_stack
    teacher = api.upload_teacher(digits_teacher.onnx).json()["id"]
    train = api.upload_dataset(digits_files["train"]).json()["id"]
    common = {"teacher_id": teacher, "train_dataset_id": train, "baseline": False}
    r = api.client.post(
        "/v1/jobs",
        json={**common, "student": {"hidden_sizes": [65_536] * 3}, "training": {"epochs": 1}},
    )
    assert r.status_code == 201, r.text  # the limits are raised: only the worker can refuse
    failed = api.wait(r.json()["id"], timeout=240)
    assert failed["status"] == "failed", (failed, api.tail())
    assert failed["error"]["code"] == "out_of_memory", failed["error"]
    assert "16.0 GiB" in failed["error"]["message"], failed["error"]

    assert api.processes[-1].poll() is None, api.tail()  # the worker is still up
