"""Cross-domain distillation through the API (docs/methods.md §6): the teacher reads digits, the
job's data is another domain (digits transposed, inverted and flattened to 64 values), and
a mapping phi (an uploaded ONNX model, or a VAE the job trains) links them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.support import Digits, Service, TeacherFiles
from tests.support.teachers import save_onnx


def to_target(x: np.ndarray) -> np.ndarray:
    return (1.0 - x[:, 0].transpose(0, 2, 1)).reshape(len(x), 64).astype(np.float32)


class Untranspose(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (1.0 - x.reshape(-1, 8, 8).transpose(1, 2)).reshape(-1, 64)


@pytest.fixture(scope="module")
def ids(
    production_service: Service,
    digits: Digits,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("crossdomain")
    mapping = folder / "mapping.onnx"
    save_onnx(Untranspose(), torch.zeros(2, 64), mapping)
    # A small target set: 500 rows; the source domain (the teacher's) has its own rows.
    np.savez(folder / "target.npz", x=to_target(digits.x_train[:500]), y=digits.y_train[:500])
    np.savez(folder / "target_test.npz", x=to_target(digits.x_test), y=digits.y_test)
    np.savez(folder / "source.npz", x=digits.x_train[500:], y=digits.y_train[500:])
    service = production_service

    def upload(response: httpx.Response) -> str:
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return {
        "teacher": upload(service.upload_teacher(digits_teacher.onnx)),
        "mapping": upload(service.upload_teacher(mapping)),
        "target": upload(service.upload_dataset(folder / "target.npz")),
        "target_test": upload(service.upload_dataset(folder / "target_test.npz")),
        "source": upload(service.upload_dataset(folder / "source.npz")),
        "source_test": upload(service.upload_dataset(digits_files["test"])),
    }


def _body(ids: dict[str, str], cross_domain: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "teacher_id": ids["teacher"],
        "train_dataset_id": ids["target"],
        "test_dataset_id": ids["target_test"],
        "student": {"hidden_sizes": [32]},
        "training": {"epochs": 8},
        "cross_domain": cross_domain,
        **extra,
    }


def _succeeds(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    return job


def _student_accuracy_in_onnxruntime(
    service: Service, job_id: str, digits: Digits, tmp_path: Path
) -> float:
    import onnxruntime as ort

    r = service.client.get(f"/v1/jobs/{job_id}/artifacts/student.onnx")
    assert r.status_code == 200
    path = tmp_path / f"{job_id}.onnx"
    path.write_bytes(r.content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [64]  # target-domain inputs, not [1, 8, 8]
    x = to_target(digits.x_test)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == digits.y_test).mean())


def test_onnx_mapping_job(
    production_service: Service,
    ids: dict[str, str],
    digits: Digits,
    digits_teacher: TeacherFiles,
    tmp_path: Path,
) -> None:
    service = production_service
    cross = {"phi": "onnx", "mapping_id": ids["mapping"]}
    mixup = {"synthesize": "mixup", "size": 4000}
    job = _succeeds(service, _body(ids, cross, transfer=mixup))
    metrics = job["metrics"]
    assert job["cross_domain"]["phi"] == "onnx"
    cross = metrics["cross_domain"]
    assert cross["phi"] == "onnx" and cross["output_shape"] == [1, 8, 8]
    assert cross["target_input_shape"] == [64] and cross["teacher_input_shape"] == [1, 8, 8]
    # The mapping undoes the domain change exactly: the teacher reads as well as on digits.
    assert metrics["teacher_accuracy"] == pytest.approx(digits_teacher.accuracy, abs=0.01)
    assert metrics["scratch_accuracy"] is not None  # the student without a teacher
    onnx_acc = _student_accuracy_in_onnxruntime(service, job["id"], digits, tmp_path)
    assert onnx_acc == pytest.approx(metrics["student_accuracy"], abs=1e-6)
    assert onnx_acc > 0.8


def test_vae_mapping_job_with_vae_transfer_set(
    production_service: Service, ids: dict[str, str], digits: Digits, tmp_path: Path
) -> None:
    service = production_service
    cross = {"phi": "vae", "source_dataset_id": ids["source"], "epochs": 20, "latent_dim": 8}
    body = _body(ids, cross, transfer={"synthesize": "vae", "size": 2000, "seed": 1})
    job = _succeeds(service, body)
    metrics = job["metrics"]
    report = metrics["cross_domain"]
    assert report["phi"] == "vae" and report["epochs"] == 20 and len(report["history"]) == 20
    assert set(report["reconstruction"]) == {"source_mse", "target_mse", "kl"}
    assert report["held_out_reconstruction"]["rows"] > 0
    assert metrics["transfer"]["sources"] == {"vae": 2000}
    # f o phi reads the other domain far above chance (10 classes).
    assert metrics["teacher_accuracy"] > 0.6
    onnx_acc = _student_accuracy_in_onnxruntime(service, job["id"], digits, tmp_path)
    assert onnx_acc == pytest.approx(metrics["student_accuracy"], abs=1e-6)
    assert onnx_acc > 0.7


def _problem(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in r.json()["errors"]], r.json()


def test_bad_cross_domain_requests_name_the_field(
    production_service: Service, ids: dict[str, str]
) -> None:
    post = production_service.client.post
    cases: list[tuple[dict[str, Any], str]] = [
        # identity, noise and convolution keep the shape: [64] is not the teacher's [1, 8, 8]
        (_body(ids, {"phi": "identity"}), "cross_domain.phi"),
        (_body(ids, {"phi": "gaussian_noise", "sigma": -1}), "cross_domain.sigma"),
        (_body(ids, {"phi": "style_transfer"}), "cross_domain.phi"),
        (_body(ids, {"phi": "dilated_conv", "kernel_size": 4}), "cross_domain.kernel_size"),
        (_body(ids, {"phi": "onnx"}), "cross_domain.mapping_id"),
        (_body(ids, {"phi": "onnx", "mapping_id": "tch_nope"}), "cross_domain.mapping_id"),
        # the teacher is no mapping of target rows: it takes [1, 8, 8], not [64]
        (_body(ids, {"phi": "onnx", "mapping_id": ids["teacher"]}), "cross_domain.mapping_id"),
        (
            _body(ids, {"phi": "onnx", "mapping_id": ids["mapping"], "sigma": 1}),
            "cross_domain.sigma",
        ),
        (_body(ids, {"phi": "vae"}), "cross_domain.source_dataset_id"),
        (
            _body(ids, {"phi": "vae", "source_dataset_id": ids["target"]}),
            "cross_domain.source_dataset_id",
        ),
        (
            _body(
                ids, {"phi": "onnx", "mapping_id": ids["mapping"]}, transfer={"synthesize": "vae"}
            ),
            "transfer.synthesize",
        ),
    ]
    for body, field in cases:
        _problem(post("/v1/jobs", json=body), field)
    # No cross_domain: a 'vae' transfer set has no VAE to decode with.
    plain = {
        "teacher_id": ids["teacher"],
        "train_dataset_id": ids["source"],
        "transfer": {"synthesize": ["mixup", "vae"]},
    }
    _problem(post("/v1/jobs", json=plain), "transfer.synthesize")


class Unchanged(torch.nn.Module):
    """A mapping that does not undo the domain change: the teacher reads transposed,
    inverted digits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def test_a_mapping_that_ruins_the_teachers_inputs_is_named(
    production_service: Service,
    ids: dict[str, str],
    digits: Digits,
    tmp_path: Path,
) -> None:
    """The teacher through phi does worse than scratch on the validation rows: the job says
    so (a warning in metrics, the events and the report), and when the distilled student
    trails scratch too, it recommends scratch.onnx."""
    service = production_service
    path = tmp_path / "unchanged.onnx"
    save_onnx(Unchanged(), torch.zeros(2, 64), path)
    mapping = service.upload_teacher(path).json()["id"]
    body = _body(ids, {"phi": "onnx", "mapping_id": mapping}, transfer=None)
    job = _succeeds(service, body)
    metrics = job["metrics"]
    validation = metrics["recommendation"]["validation"]
    assert validation["teacher"] < validation["scratch"], validation
    assert any("mislead the student" in w for w in metrics["warnings"]), metrics["warnings"]
    events = service.client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 100}).json()
    warned = [e for e in events["data"] if (e["data"] or {}).get("warning")]
    assert [e["data"]["warning"] for e in warned] == metrics["warnings"]
    report = service.client.get(f"/v1/jobs/{job['id']}/artifacts/report.html").text
    assert "Warning: the teacher, as this job feeds it" in report
    if validation["student"] < validation["scratch"]:
        assert metrics["recommendation"]["ship"] == "scratch"
        assert "Ship scratch.onnx" in report
