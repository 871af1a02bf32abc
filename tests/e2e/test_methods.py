"""Methods beyond plain KD through the API: teacher ensembles and early-stopped KD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support import Digits, Service, TeacherFiles
from tests.support.teachers import save_onnx


def _linear_teacher(digits: Digits, folder: Path, flat: bool, shuffled: bool = False) -> Path:
    """A second, weaker teacher (softmax regression), trained here; `shuffled`: trained on
    labels in a random order, so it is no better than chance."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    if shuffled:
        y = y[torch.randperm(len(y))]
    if flat:
        x = x.reshape(len(x), 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = folder / f"{'flat' if flat else 'linear'}{'-shuffled' if shuffled else ''}.onnx"
    save_onnx(model, x[:2], path)
    return path


@pytest.fixture(scope="module")
def ids(
    production_service: Service,
    digits: Digits,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("methods")
    service = production_service
    return {
        "mlp": service.upload_teacher(digits_teacher.onnx).json()["id"],
        "linear": service.upload_teacher(_linear_teacher(digits, folder, False)).json()["id"],
        "flat": service.upload_teacher(_linear_teacher(digits, folder, True)).json()["id"],
        "chance": service.upload_teacher(
            _linear_teacher(digits, folder, False, shuffled=True)
        ).json()["id"],
        "train": service.upload_dataset(digits_files["train"]).json()["id"],
        "test": service.upload_dataset(digits_files["test"]).json()["id"],
    }


def test_ensemble_of_teachers(production_service: Service, ids: dict[str, str]) -> None:
    service = production_service
    body = {
        "teacher_ids": [ids["mlp"], ids["linear"]],
        "train_dataset_id": ids["train"],
        "test_dataset_id": ids["test"],
        "training": {"epochs": 10},
    }
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["teacher_ids"] == [ids["mlp"], ids["linear"]]
    assert r.json()["teacher_id"] == ids["mlp"]
    job = service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    metrics = service.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").json()
    members = metrics["teacher"]["ensemble"]
    assert [m["id"] for m in members] == [ids["mlp"], ids["linear"]]
    assert all(0.8 < m["accuracy"] <= 1.0 for m in members)
    assert all(0.8 < m["validation_accuracy"] <= 1.0 for m in members)
    assert metrics["teacher_parameters"] == sum(m["parameters"] for m in members)
    assert metrics["student_accuracy"] > 0.85
    assert not any("ensemble member" in w for w in metrics["warnings"])


def test_an_ensemble_member_below_scratch_is_named(
    production_service: Service, ids: dict[str, str]
) -> None:
    """A member no better than chance pulls the ensemble's targets off the labels: the job
    names it in its warnings (and its events), on the validation rows."""
    service = production_service
    body = {
        "teacher_ids": [ids["mlp"], ids["chance"]],
        "train_dataset_id": ids["train"],
        "training": {"epochs": 5},
        "quantize": False,
    }
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    metrics = service.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").json()
    chance = metrics["teacher"]["ensemble"][1]
    assert chance["validation_accuracy"] < 0.3
    named = [w for w in metrics["warnings"] if "ensemble member" in w]
    assert len(named) == 1 and ids["chance"] in named[0], metrics["warnings"]
    events = service.client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000})
    assert any(ids["chance"] in e["message"] for e in events.json()["data"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"teacher_ids": ["@mlp", "@flat"]}, "teacher_ids.1"),
        ({"teacher_ids": ["@mlp", "tch_nope"]}, "teacher_ids.1"),
        ({"teacher_ids": ["@mlp", "@mlp"]}, "teacher_ids"),
        ({"teacher_id": "@linear", "teacher_ids": ["@mlp", "@linear"]}, "body"),
        ({}, "body"),
        ({"teacher_id": "@mlp", "method": {"kd_stop_epoch": 50}}, "method.kd_stop_epoch"),
        ({"teacher_id": "@mlp", "training": {"jitter_pixels": 9}}, "training.jitter_pixels"),
        (
            {"teacher_id": "@mlp", "training": {"time_limit_seconds": 0}},
            "training.time_limit_seconds",
        ),
    ],
)
def test_bad_method_requests(
    production_service: Service, ids: dict[str, str], body: dict[str, object], field: str
) -> None:
    def resolve(value: object) -> object:
        if isinstance(value, str) and value.startswith("@"):
            return ids[value[1:]]
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    request = {k: resolve(v) for k, v in body.items()}
    request["train_dataset_id"] = ids["train"]
    r = production_service.client.post("/v1/jobs", json=request)
    assert r.status_code == 422, r.text
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.startswith(field) for f in fields), r.json()


def test_jitter_augmentation(production_service: Service, ids: dict[str, str]) -> None:
    """Hinton's 2-pixel jitter: every batch shifted afresh, the teacher labels each one."""
    service = production_service
    body = {
        "teacher_id": ids["mlp"],
        "train_dataset_id": ids["train"],
        "test_dataset_id": ids["test"],
        "training": {"epochs": 6, "jitter_pixels": 1},
    }
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["training"]["jitter_pixels"] == 1
    job = service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    metrics = service.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").json()
    assert metrics["training"]["jitter_pixels"] == 1
    # One pixel is a big shift on an 8x8 digit: a harder task, still well learned.
    assert metrics["student_accuracy"] > 0.7 and metrics["scratch_accuracy"] > 0.7


def test_early_stopped_kd(production_service: Service, ids: dict[str, str]) -> None:
    service = production_service
    body = {
        "teacher_id": ids["mlp"],
        "train_dataset_id": ids["train"],
        "method": {"kd_stop_epoch": 4, "alpha": 0.0},
        "training": {"epochs": 8},
        "baseline": False,
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    history = job["metrics"]["history"]
    # Epochs 1-4 distill (alpha 0: no hard term); from epoch 5 only the hard labels train.
    assert all(h["hard_loss"] == 0 for h in history[:4])
    assert all(h["hard_loss"] > 0 for h in history[4:])
    assert all(np.isclose(h["loss"], h["hard_loss"]) for h in history[4:])


def test_teacher_assistants(
    production_service: Service, ids: dict[str, str], tmp_path: Path
) -> None:
    import onnxruntime as ort

    service = production_service
    body = {
        "teacher_id": ids["mlp"],
        "train_dataset_id": ids["train"],
        "test_dataset_id": ids["test"],
        "student": {"hidden_sizes": [16]},
        "assistants": {"count": 2},
        "training": {"epochs": 8},
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    metrics = job["metrics"]
    steps = metrics["assistants"]
    assert [s["step"] for s in steps] == [1, 2]
    assert metrics["teacher_parameters"] > steps[0]["parameters"] > steps[1]["parameters"]
    assert steps[1]["parameters"] > metrics["student_parameters"]
    names = {
        a["name"] for a in service.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    }
    assert {"assistant_1.onnx", "assistant_2.onnx", "student.onnx"} <= names
    path = tmp_path / "assistant_2.onnx"
    path.write_bytes(service.client.get(f"/v1/jobs/{job['id']}/artifacts/assistant_2.onnx").content)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.zeros((3, 1, 8, 8), np.float32)
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (3, 10)
    assert all(0.5 < s["accuracy"] <= 1 for s in steps)


@pytest.mark.parametrize(
    ("assistants", "field"),
    [
        ({}, "assistants"),
        ({"count": 1, "hidden_sizes": [[64]]}, "assistants"),
        ({"channels": [[8]]}, "assistants.channels"),
        ({"count": 9}, "assistants.count"),
    ],
)
def test_bad_assistants(
    production_service: Service, ids: dict[str, str], assistants: dict[str, object], field: str
) -> None:
    body = {"teacher_id": ids["mlp"], "train_dataset_id": ids["train"], "assistants": assistants}
    r = production_service.client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()


def test_student_sized_from_a_compression_target(
    production_service: Service, ids: dict[str, str]
) -> None:
    service = production_service
    body = {
        "teacher_id": ids["mlp"],
        "train_dataset_id": ids["train"],
        "student": {"hidden_sizes": [64, 64], "compression": 25},
        "training": {"epochs": 3},
        "baseline": False,
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    metrics = service.client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").json()
    budget = metrics["teacher_parameters"] / 25
    assert 0.8 * budget < metrics["student_parameters"] <= budget
    sized = metrics["student"]["sized"]
    assert len(sized["hidden_sizes"]) == 2 and sized["compression"] == 25

    too_small = {**body, "student": {"hidden_sizes": [64], "max_parameters": 20}}
    job = service.wait(service.client.post("/v1/jobs", json=too_small).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "student_too_small" and "20" in job["error"]["message"]


def test_early_stopped_teacher_checkpoints(
    production_service: Service, digits: Digits, ids: dict[str, str], tmp_path: Path
) -> None:
    """Checkpoints of one teacher after 1, 4 and 30 epochs: the job distills from each."""
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    uploaded = []
    for epoch in range(1, 31):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if epoch in (1, 4, 30):
            path = tmp_path / f"epoch{epoch}.onnx"
            save_onnx(model, x[:2], path)
            model.train()
            uploaded.append(production_service.upload_teacher(path).json()["id"])
    body = {
        "teacher_checkpoint_ids": uploaded,
        "train_dataset_id": ids["train"],
        "test_dataset_id": ids["test"],
        "training": {"epochs": 6},
    }
    r = production_service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["teacher_checkpoint_ids"] == uploaded
    job = production_service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{production_service.tail()}"
    report = job["metrics"]["checkpoints"]
    assert [c["checkpoint"] for c in report] == [1, 2, 3]
    assert sum(c["chosen"] for c in report) == 1
    chosen = next(c for c in report if c["chosen"])
    assert chosen["validation_accuracy"] == max(c["validation_accuracy"] for c in report)
    assert job["metrics"]["student_accuracy"] == chosen["student_accuracy"]
    assert job["metrics"]["teacher"]["id"] == uploaded[chosen["checkpoint"] - 1]
    assert report[0]["teacher_accuracy"] < report[2]["teacher_accuracy"]
    assert job["metrics"]["scratch_accuracy"] is not None

    both = {**body, "teacher_ids": uploaded[:2]}
    assert production_service.client.post("/v1/jobs", json=both).status_code == 422


def test_fitnets_hint(production_service: Service, ids: dict[str, str]) -> None:
    service = production_service
    teacher = service.client.get(f"/v1/teachers/{ids['mlp']}").json()
    assert teacher["hint_candidates"], teacher
    name = teacher["hint_candidates"][-1]
    body = {
        "teacher_id": ids["mlp"],
        "train_dataset_id": ids["train"],
        "student": {"hidden_sizes": [64, 32]},
        "method": {"hint": {"teacher_output": name, "epochs": 3}},
        "training": {"epochs": 5},
        "baseline": False,
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    hint = job["metrics"]["hint"]
    assert hint["teacher_output"] == name and len(hint["mse"]) == 3
    assert hint["mse"][-1] < hint["mse"][0]
    assert hint["student_width"] == 64

    bad = {**body, "method": {"hint": {"teacher_output": "no_such_tensor"}}}
    r = service.client.post("/v1/jobs", json=bad)
    assert r.status_code == 422 and name in r.json()["detail"]
    assert r.json()["errors"][0]["field"] == "method.hint.teacher_output"


def test_search_on_validation_through_the_api(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """ "search": {"budget": 3}: three student candidates and three scratch ones, each scored
    on the validation rows; the job shows which one trains, metrics.search is the leaderboard,
    the report draws it, and the chosen student is the one delivered."""
    service = production_service
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    body = {
        "teacher_id": teacher["id"],
        "train_dataset_id": train["id"],
        "student": {"hidden_sizes": [32]},
        "training": {"epochs": 3},
        "search": {"budget": 3},
    }
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["search"] == {"budget": 3}
    job = service.wait(r.json()["id"])
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    search = job["metrics"]["search"]
    assert search["budget"] == 3
    kinds = [(c["kind"], c["number"]) for c in search["candidates"]]
    assert kinds == [("student", n) for n in (1, 2, 3)] + [("scratch", n) for n in (1, 2, 3)]
    chosen = [c for c in search["candidates"] if c["chosen"]]
    assert [c["kind"] for c in chosen] == ["student", "scratch"]
    student = chosen[0]
    assert student["number"] == search["chosen_student"]
    best = max(c["validation_accuracy"] for c in search["candidates"] if c["kind"] == "student")
    assert student["validation_accuracy"] == best
    metrics = job["metrics"]
    assert metrics["history"][-1]["validation_accuracy"] == best
    assert metrics["baseline"] == "trained (searched)"
    events = service.client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 500}).json()
    stages = [e["data"].get("stage") for e in events["data"] if e["type"] == "message"]
    assert "student_candidate_2_of_3" in stages and "scratch_candidate_3_of_3" in stages
    report = service.client.get(f"/v1/jobs/{job['id']}/artifacts/report.html").text
    assert "Search on the validation rows (budget 3)" in report
    assert "validation accuracy against parameters" in report

    refused = service.client.post(
        "/v1/jobs", json={**body, "assistants": {"count": 1}, "search": "auto"}
    )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "search_unsupported" and problem["errors"][0]["field"] == "search"
