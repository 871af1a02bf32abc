"""Transfer sets: students learn from unlabeled and synthesized inputs the teacher labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import Digits, Service, TeacherFiles

LABELED = 200


@pytest.fixture(scope="module")
def few_labels(
    production_service: Service,
    digits: Digits,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """A digits task with 200 labeled rows, the other training rows without labels."""
    folder = tmp_path_factory.mktemp("transfer")
    np.savez(folder / "few.npz", x=digits.x_train[:LABELED], y=digits.y_train[:LABELED])
    np.savez(folder / "rest.npz", x=digits.x_train[LABELED:])
    np.savez(folder / "flat.npz", x=digits.x_train[LABELED:].reshape(-1, 64))
    service = production_service
    return {
        "teacher_id": service.upload_teacher(digits_teacher.onnx).json()["id"],
        "train_dataset_id": service.upload_dataset(folder / "few.npz").json()["id"],
        "test_dataset_id": service.upload_dataset(digits_files["test"]).json()["id"],
        "rest": service.upload_dataset(folder / "rest.npz").json()["id"],
        "flat": service.upload_dataset(folder / "flat.npz").json()["id"],
    }


def _run(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    return job


def test_a_job_that_names_no_transfer_set_gets_one_for_its_data_kind(
    production_service: Service, few_labels: dict[str, str]
) -> None:
    """The default ("transfer": "auto"): image rows get shift and mixup rows the teacher
    labels, the job says what it chose and why, and the student beats the one the same job
    trains without them ("transfer": null)."""
    service = production_service
    base = {k: few_labels[k] for k in ("teacher_id", "train_dataset_id", "test_dataset_id")}
    base["student"] = {"hidden_sizes": [32]}
    default = _run(service, base)
    assert default["transfer"] == "auto"
    metrics = default["metrics"]
    choice = metrics["transfer_spec"]["choice"]
    assert choice["chosen"] == "auto" and choice["data_kind"] == "image"
    assert choice["synthesize"] == ["shift", "mixup"] and "image rows" in choice["reason"]
    # At most DISTILLERY_AUTO_TRANSFER_MAX_ROWS (3,000 on the test stacks), split evenly.
    assert metrics["transfer"]["sources"] == {"shift": 1500, "mixup": 1500}
    assert choice["rows"] == 3000
    assert metrics["transfer_spec"]["synthesize"]["synthesize"] == ["shift", "mixup"]
    report = service.client.get(f"/v1/jobs/{default['id']}/artifacts/report.html").text
    assert "Transfer set" in report and "image rows: shift and mixup" in report

    off = _run(service, {**base, "transfer": None})
    assert off["metrics"]["transfer"]["transfer_rows"] == 0
    gain = metrics["student_accuracy"] - off["metrics"]["student_accuracy"]
    assert gain > 0, (metrics["student_accuracy"], off["metrics"]["student_accuracy"])


def test_transfer_rows_improve_the_student(
    production_service: Service, few_labels: dict[str, str]
) -> None:
    service = production_service
    base = {k: few_labels[k] for k in ("teacher_id", "train_dataset_id", "test_dataset_id")}
    base["student"] = {"hidden_sizes": [32]}
    plain = _run(service, {**base, "transfer": None})
    assert plain["transfer"] is None
    assert plain["metrics"]["transfer_spec"]["choice"]["chosen"] == "off"
    assert plain["metrics"]["transfer"]["sources"] == {}
    body = {
        **base,
        "transfer_dataset_ids": [few_labels["rest"]],
        "transfer": {"synthesize": ["mixup", "shift"], "size": 4000, "seed": 3},
    }
    rich = _run(service, body)

    metrics = rich["metrics"]
    assert rich["transfer_dataset_ids"] == [few_labels["rest"]]
    assert metrics["transfer"]["labeled_rows"] < LABELED  # validation rows were held out
    assert metrics["transfer"]["sources"] == {
        few_labels["rest"]: 1300 - LABELED,
        "mixup": 4000,
        "shift": 4000,
    }
    assert metrics["transfer"]["transfer_rows"] == 1300 - LABELED + 8000
    assert metrics["transfer_spec"]["choice"]["chosen"] == "given"
    last = metrics["history"][-1]
    assert last["soft_loss_transfer"] is not None and last["soft_loss_labeled"] is not None
    assert plain["metrics"]["history"][-1]["soft_loss_transfer"] is None
    # The teacher labels what the few labels cannot cover: a clearly better student.
    gain = metrics["student_accuracy"] - plain["metrics"]["student_accuracy"]
    assert gain > 0.02, (metrics["student_accuracy"], plain["metrics"]["student_accuracy"])

    # Same teacher, same inputs, same seed: the synthesized rows are the same, and the
    # teacher's outputs for all of them come from the cache.
    again = _run(service, body)
    cache = again["metrics"]["teacher_output_cache"]
    assert cache["misses"] == 0 and cache["hits"] >= 5
    assert again["metrics"]["student_accuracy"] == metrics["student_accuracy"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"transfer_dataset_ids": ["@flat"]}, "transfer_dataset_ids.0", "@flat"),
        ({"transfer_dataset_ids": ["@rest", "ds_nope"]}, "transfer_dataset_ids.1", "ds_nope"),
        ({"transfer": {"synthesize": "vae"}}, "transfer.synthesize", "vae"),
        ({"transfer": {"synthesize": "warp"}}, "transfer.synthesize", "mixup"),
        ({"transfer": {"synthesize": "noise", "size": 0}}, "transfer.size", "greater"),
        (
            {"transfer": {"synthesize": ["noise", "mixup", "shift"], "size": 5_000_000}},
            "transfer.size",
            "GiB",
        ),
    ],
)
def test_bad_transfer_requests(
    production_service: Service,
    few_labels: dict[str, str],
    change: dict[str, Any],
    field: str | None,
    words: str,
) -> None:
    body: dict[str, Any] = {
        k: few_labels[k] for k in ("teacher_id", "train_dataset_id", "test_dataset_id")
    }
    for key, value in change.items():
        if isinstance(value, list):
            value = [few_labels[v[1:]] if v.startswith("@") else v for v in value]
        body[key] = value
    if words.startswith("@"):
        words = few_labels[words[1:]]
    r = production_service.client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    assert words in problem["detail"], problem
