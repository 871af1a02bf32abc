"""Hostile or broken input: a clear 4xx naming the field, nothing executed, service keeps going."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import Service, TeacherFiles


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _problem(
    r: Any, status: int, field: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    return body


def test_bad_teacher_files(
    production_service: Service, digits_teacher: TeacherFiles, tmp_path: Path
) -> None:
    import torch

    service = production_service
    marker = tmp_path / "pwned"
    cases: dict[str, bytes] = {
        "garbage.onnx": os.urandom(4096),
        "empty.onnx": b"",
        "truncated.onnx": digits_teacher.onnx.read_bytes()[:3000],
        "truncated.pt2": digits_teacher.pt2.read_bytes()[:5000],
        "exploit.pkl": pickle.dumps(_Exploit(marker)),
    }
    module_path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(64, 10), module_path)
    cases["module.pt"] = module_path.read_bytes()
    state_path = tmp_path / "state.pt"
    torch.save(torch.nn.Linear(64, 10).state_dict(), state_path)
    cases["state_dict.pt"] = state_path.read_bytes()
    exploit_zip = tmp_path / "exploit.pt"
    torch.save({"x": _Exploit(marker)}, exploit_zip)
    cases["exploit_zip.pt"] = exploit_zip.read_bytes()

    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        body = _problem(service.upload_teacher(path), 422, "file", "teacher_invalid")
        if name in ("exploit.pkl", "module.pt", "exploit_zip.pt"):
            assert "pickle" in body["detail"].lower(), body
            assert "export" in body["detail"].lower(), body
        assert service.alive()
    assert not marker.exists(), "an uploaded pickle was executed"


def test_bad_datasets(production_service: Service, tmp_path: Path) -> None:
    service = production_service
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int64))
    np.savez(tmp_path / "negative.npz", x=np.zeros((30, 64), np.float32), y=-np.ones(30, np.int64))
    np.savez(tmp_path / "objects.npz", x=np.array([[1, "a"]] * 30, dtype=object))
    (tmp_path / "garbage.npz").write_bytes(os.urandom(2000))
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    for name in ("empty.npz", "negative.npz", "objects.npz", "garbage.npz", "bad.csv"):
        _problem(service.upload_dataset(tmp_path / name), 422, "file", "dataset_invalid")
        assert service.alive()
    (tmp_path / "ok.csv").write_text("a,b,target\n1,2,0\n3,4,1\n")
    r = service.upload_dataset(tmp_path / "ok.csv", label_column="klass")
    _problem(r, 422, "label_column", "dataset_invalid")
    r = service.upload_dataset(tmp_path / "ok.csv", label_column="target")
    assert r.status_code == 201 and r.json()["num_classes"] == 2


def test_upload_limit_counts_bytes(production_service: Service, tmp_path: Path) -> None:
    service = production_service
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * (9 * 1024 * 1024))  # the test stack allows 8 MiB
    _problem(service.upload_teacher(big), 413, "file", "payload_too_large")

    def chunked() -> Any:  # no Content-Length: counted as it arrives
        boundary = b"--xyz\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="b.onnx"\r\n\r\n'
        for _ in range(9):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--xyz--\r\n"

    r = service.client.post(
        "/v1/teachers",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    _problem(r, 413, "file", "payload_too_large")
    assert service.alive()


@pytest.fixture(scope="module")
def uploaded(
    production_service: Service,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    service = production_service
    folder = tmp_path_factory.mktemp("bad-jobs")
    np.savez(folder / "flat.npz", x=np.zeros((40, 64), np.float32), y=np.arange(40) % 10)
    np.savez(folder / "many.npz", x=np.zeros((40, 1, 8, 8), np.float32), y=np.arange(40) % 13)
    np.savez(folder / "tiny.npz", x=np.zeros((5, 1, 8, 8), np.float32), y=np.arange(5))
    return {
        "teacher": service.upload_teacher(digits_teacher.onnx).json()["id"],
        "train": service.upload_dataset(digits_files["train"]).json()["id"],
        "unlabeled": service.upload_dataset(digits_files["unlabeled"]).json()["id"],
        "flat": service.upload_dataset(folder / "flat.npz").json()["id"],
        "many": service.upload_dataset(folder / "many.npz").json()["id"],
        "tiny": service.upload_dataset(folder / "tiny.npz").json()["id"],
    }


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"teacher_id": "tch_missing"}, "teacher_id", "unknown_id"),
        ({"train_dataset_id": "ds_missing"}, "train_dataset_id", "unknown_id"),
        ({"test_dataset_id": "ds_missing"}, "test_dataset_id", "unknown_id"),
        ({"train_dataset_id": "@flat"}, "train_dataset_id", "shape_mismatch"),
        ({"train_dataset_id": "@many"}, "train_dataset_id", "labels_out_of_range"),
        ({"train_dataset_id": "@tiny"}, "train_dataset_id", "invalid_input"),
        ({"train_dataset_id": "@unlabeled"}, "train_dataset_id", "labels_required"),
        ({"test_dataset_id": "@unlabeled"}, "test_dataset_id", "labels_required"),
        ({"training": {"epochs": 0}}, "training.epochs", "invalid_input"),
        ({"training": {"learning_rate": -1}}, "training.learning_rate", "invalid_input"),
        ({"training": {"batch_size": 0}}, "training.batch_size", "invalid_input"),
        ({"training": {"seed": 2**31}}, "training.seed", "invalid_input"),
        (
            {"training": {"time_limit_seconds": 2**31}},
            "training.time_limit_seconds",
            "invalid_input",
        ),
        ({"method": {"temperature": 0}}, "method.temperature", "invalid_input"),
        ({"method": {"alpha": 1.5}}, "method.alpha", "invalid_input"),
        ({"method": {"type": "magic"}}, "method.type", "invalid_input"),
        ({"method": {"kd_stop_epoch": 10**20}}, "method.kd_stop_epoch", "invalid_input"),
        ({"student": {"architecture": "transformer"}}, "student.architecture", "invalid_input"),
        ({"student": {"hidden_sizes": []}}, "student.hidden_sizes", "invalid_input"),
        ({"student": {"hidden_sizes": [2**40]}}, "student.hidden_sizes.0", "invalid_input"),
        ({"student": {"max_parameters": 2**63}}, "student.max_parameters", "invalid_input"),
        ({"student": {"dropout": 1.0}}, "student.dropout", "invalid_input"),
        ({"student": {"hidden": [3]}}, "student.hidden", "invalid_input"),
        ({"transfer": {"synthesize": "noise", "size": 10**12}}, "transfer.size", "invalid_input"),
    ],
)
def test_bad_job_submissions(
    production_service: Service,
    uploaded: dict[str, str],
    change: dict[str, Any],
    field: str,
    code: str,
) -> None:
    body: dict[str, Any] = {
        "teacher_id": uploaded["teacher"],
        "train_dataset_id": uploaded["train"],
    }
    for key, value in change.items():
        body[key] = uploaded[value[1:]] if isinstance(value, str) and value[:1] == "@" else value
    _problem(production_service.client.post("/v1/jobs", json=body), 422, field, code)
    assert production_service.alive()


def test_unknown_routes_and_ids_are_problems(production_service: Service) -> None:
    api = production_service.client
    _problem(api.get("/v1/jobs/job_nope"), 404)
    _problem(api.get("/v1/teachers/tch_nope"), 404)
    _problem(api.get("/v1/datasets/ds_nope"), 404)
    _problem(api.post("/v1/jobs/job_nope/cancel"), 404)
    _problem(api.get("/v1/jobs/job_nope/artifacts/student.onnx"), 404)
    _problem(
        api.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )
