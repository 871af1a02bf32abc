"""NaN and infinity, on both stacks: a teacher whose outputs are not finite is refused at upload
(when the probe shows it) or fails its job (when only the job's rows do: more rows than the
probe, or transfer rows unlike the training data); a loss that overflows fails the job; and no
response, event or artifact ever holds NaN or Infinity."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import Service
from tests.worker.hostile import constant_onnx, poisoned_onnx

JOB: dict[str, Any] = {
    "student": {"hidden_sizes": [8]},
    "training": {"epochs": 2},
    "baseline": False,
}


def strict(text: str) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not numbers there."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in {text[:300]}")

    return json.loads(text, parse_constant=refuse)


def _nan_pt2(path: Path) -> Path:
    import torch

    class Poisoned(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] * float("nan")

    batch = torch.export.Dim("batch")
    program = torch.export.export(
        Poisoned(), (torch.zeros(4, 1, 8, 8),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("not-finite")
    return {
        "nan.onnx": poisoned_onnx(folder / "nan.onnx", math.nan),
        "inf.onnx": poisoned_onnx(folder / "inf.onnx", math.inf),
        "minus_inf.onnx": poisoned_onnx(folder / "minus_inf.onnx", -math.inf),
        "nan.pt2": _nan_pt2(folder / "nan.pt2"),
        "late.onnx": poisoned_onnx(folder / "late.onnx", math.nan, "past_probe"),
        "far.onnx": poisoned_onnx(folder / "far.onnx", math.inf, "large_inputs"),
        "constant.onnx": constant_onnx(folder / "constant.onnx"),
    }


@pytest.mark.parametrize(
    ("stack", "name"),
    [
        ("production", "nan.onnx"),
        ("production", "nan.pt2"),
        ("embedded", "inf.onnx"),
        ("embedded", "minus_inf.onnx"),
    ],
)
def test_teachers_not_finite_on_the_probe_are_refused(
    request: pytest.FixtureRequest, teachers: dict[str, Path], stack: str, name: str
) -> None:
    """Each upload is inspected in a subprocess (seconds): two formats and three poisons over
    the two stacks (tests/engine/test_finite.py tries every one in process)."""
    service: Service = request.getfixturevalue(f"{stack}_service")
    r = service.upload_teacher(teachers[name])
    assert r.status_code == 422, r.text
    problem = strict(r.text)
    assert problem["code"] == "teacher_output_not_finite", problem
    assert [e["field"] for e in problem["errors"]] == ["file"], problem
    assert "8 probe rows" in problem["detail"], problem


def _dataset(service: Service, path: Path, x: np.ndarray, labeled: bool = True) -> str:
    arrays = {"x": x.astype(np.float32)}
    if labeled:
        arrays["y"] = np.arange(len(x)) % 10
    np.savez(path, **arrays)
    r = service.upload_dataset(path)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _failed(service: Service, body: dict[str, Any], code: str) -> dict[str, Any]:
    r = service.client.post("/v1/jobs", json={**JOB, **body})
    assert r.status_code == 201, r.text
    job = service.wait(r.json()["id"], timeout=240)
    assert job["status"] == "failed", (job.get("error"), service.tail())
    assert job["error"]["code"] == code, job["error"]
    # Nothing about the job holds NaN: its record, its events and their stream.
    strict(service.client.get(f"/v1/jobs/{job['id']}").text)
    strict(service.client.get(f"/v1/jobs/{job['id']}/events").text)
    stream = service.client.get(f"/v1/jobs/{job['id']}/events/stream").text
    events = [strict(line[6:]) for line in stream.splitlines() if line.startswith("data: ")]
    assert events[-1]["data"]["error"]["code"] == code, events[-1]
    return job


def test_teacher_outputs_not_finite_on_job_rows_fail_the_job(
    production_service: Service, teachers: dict[str, Path], tmp_path: Path
) -> None:
    service = production_service
    train = _dataset(
        service, tmp_path / "train.npz", np.random.default_rng(0).random((200, 1, 8, 8))
    )
    late = service.upload_teacher(teachers["late.onnx"]).json()["id"]
    far = service.upload_teacher(teachers["far.onnx"]).json()["id"]

    # NaN once a batch holds more rows than the inspector's probe.
    job = _failed(
        service, {"teacher_id": late, "train_dataset_id": train}, "teacher_output_not_finite"
    )
    assert "training rows" in job["error"]["message"]

    # Finite on the training rows, infinite on transfer rows far from them.
    away = _dataset(service, tmp_path / "far.npz", np.full((50, 1, 8, 8), 1000.0), labeled=False)
    body = {"teacher_id": far, "train_dataset_id": train, "transfer_dataset_ids": [away]}
    job = _failed(service, body, "teacher_output_not_finite")
    assert f"transfer rows from {away}" in job["error"]["message"], job["error"]
    assert service.alive()


def test_a_loss_that_overflows_fails_the_job(
    embedded_service: Service, teachers: dict[str, Path], tmp_path: Path
) -> None:
    """A finite teacher and finite data near float32's limit, not standardized: the student's
    logits overflow. (The engine is the same on both stacks: each case runs on one of them.)"""
    service = embedded_service
    constant = service.upload_teacher(teachers["constant.onnx"]).json()["id"]
    x = np.random.default_rng(0).random((200, 1, 8, 8)) * 3e38
    huge = _dataset(service, tmp_path / "huge.npz", x)
    body = {
        "teacher_id": constant,
        "train_dataset_id": huge,
        "student": {"hidden_sizes": [8], "normalize": False},
    }
    job = _failed(service, body, "loss_not_finite")
    assert "epoch 1" in job["error"]["message"], job["error"]
    assert service.alive()
