"""The whole path through HTTP: upload teacher and data, distill, download a checked ONNX."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support import Digits, Service, TeacherFiles

JOB_BODY = {
    "student": {"architecture": "mlp", "hidden_sizes": [32]},
    "method": {"type": "kd", "temperature": 4.0, "alpha": 0.1},
    "training": {"epochs": 25, "batch_size": 64, "learning_rate": 0.003, "seed": 0},
}


def _onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: x})[0]
    return float((logits.argmax(1) == y).mean()), logits


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_distill_end_to_end(
    service: Service,
    fmt: str,
    digits: Digits,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    api = service.client
    teacher_path = digits_teacher.onnx if fmt == "onnx" else digits_teacher.pt2
    r = service.upload_teacher(teacher_path)
    assert r.status_code == 201, r.text
    teacher = r.json()
    assert teacher["status"] == "ready"
    assert teacher["format"] == fmt
    assert teacher["input_shape"] == [1, 8, 8]
    assert teacher["num_classes"] == 10
    assert teacher["parameters"] == digits_teacher.parameters
    assert teacher["output_kind"] == "logits"
    assert teacher["bytes"] == teacher_path.stat().st_size
    assert api.get(f"/v1/teachers/{teacher['id']}").json()["id"] == teacher["id"]

    r = service.upload_dataset(digits_files["train"])
    assert r.status_code == 201, r.text
    train = r.json()
    assert train["rows"] == len(digits.x_train)
    assert train["feature_shape"] == [1, 8, 8]
    assert train["num_classes"] == 10 and train["labeled"] is True
    test = service.upload_dataset(digits_files["test"]).json()

    submitted = time.monotonic()
    r = api.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "test_dataset_id": test["id"],
            **JOB_BODY,
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["epochs"] == 25

    seen_running = False
    while True:
        job = api.get(f"/v1/jobs/{job['id']}").json()
        if job["status"] == "running" and job["epoch"] > 0:
            seen_running = True
            assert job["metrics"]["latest"]["epoch"] == job["epoch"]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() - submitted < 300, service.tail()
        time.sleep(0.1)
    elapsed = time.monotonic() - submitted
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    assert job["stage"] == "done" and job["epoch"] == 25
    for key in ("created_at", "started_at", "finished_at"):
        assert job[key].endswith(("Z", "+00:00")), f"{key} must carry its zone: {job[key]}"
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert seen_running, "never saw the job running with an epoch"
    assert job["split"]["test"]["source"] == "test_dataset_id"
    assert job["split"]["validation"]["source"] == "held out of train"

    listing = api.get(f"/v1/jobs/{job['id']}/artifacts").json()
    names = {a["name"] for a in listing["data"]}
    assert names == {
        "student.onnx",
        "student.safetensors",
        "scratch.onnx",
        "student.int8.onnx",
        "metrics.json",
        "report.html",
    }
    assert all(a["created_at"].endswith(("Z", "+00:00")) for a in listing["data"])

    metrics = api.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").json()
    report = api.get(f"/v1/jobs/{job['id']}/artifacts/report.html")
    assert report.headers["content-type"].startswith("text/html")
    assert "distilled student" in report.text and report.text.count("data:image/png;base64") == 2
    out = Path(__file__).resolve().parents[2] / "test-output"
    out.mkdir(exist_ok=True)
    (out / f"report-{service.name}-{fmt}.html").write_text(report.text)
    onnx_file = tmp_path / "student.onnx"
    with api.stream("GET", f"/v1/jobs/{job['id']}/artifacts/student.onnx") as resp:
        assert resp.status_code == 200
        with onnx_file.open("wb") as out:
            for chunk in resp.iter_bytes():
                out.write(chunk)
    assert onnx_file.stat().st_size == metrics["onnx_bytes"]
    assert not list(tmp_path.glob("*.data")), "the ONNX file must be self-contained"

    accuracy, _ = _onnx_accuracy(onnx_file, digits.x_test, digits.y_test)
    assert abs(accuracy - metrics["student_accuracy"]) < 1e-9
    assert accuracy > 0.85, "the student must clearly beat chance (0.1)"
    # The batch dimension is dynamic: one row works too.
    one, _ = _onnx_accuracy(onnx_file, digits.x_test[:1], digits.y_test[:1])
    assert one in (0.0, 1.0)

    assert abs(metrics["teacher_accuracy"] - digits_teacher.accuracy) < 1e-6
    assert metrics["agreement"] > 0.85
    assert metrics["teacher_parameters"] == digits_teacher.parameters
    assert metrics["student_parameters"] < digits_teacher.parameters / 10
    assert metrics["onnx_max_abs_diff"] < 1e-4
    assert metrics["train_seconds"] > 0
    history = metrics["history"]
    assert len(history) == 25
    for key in ("loss", "hard_loss", "soft_loss", "validation_accuracy"):
        assert all(np.isfinite(h[key]) for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    assert job["metrics"]["student_accuracy"] == metrics["student_accuracy"]
    # The same student from scratch, same rows, budget and seed, reported beside it.
    assert job["baseline"] is True and metrics["baseline"] == "trained"
    assert len(metrics["history_scratch"]) == 25
    assert all(h["soft_loss"] == 0 for h in metrics["history_scratch"])
    assert 0.5 < metrics["scratch_accuracy"] <= 1.0
    # The baseline is downloadable too, and it is the model the scratch figures come from.
    scratch_file = tmp_path / "scratch.onnx"
    scratch_file.write_bytes(api.get(f"/v1/jobs/{job['id']}/artifacts/scratch.onnx").content)
    scratch_accuracy, _ = _onnx_accuracy(scratch_file, digits.x_test, digits.y_test)
    assert abs(scratch_accuracy - metrics["scratch_accuracy"]) < 1e-9
    # The int8 student (dynamic for an mlp) is measured beside the fp32 one.
    int8 = metrics["int8"]
    assert int8["status"] == "built" and int8["mode"] == "dynamic", int8
    int8_file = tmp_path / "student.int8.onnx"
    int8_file.write_bytes(api.get(f"/v1/jobs/{job['id']}/artifacts/student.int8.onnx").content)
    assert int8_file.stat().st_size == int8["bytes"] < int8["fp32_bytes"] == metrics["onnx_bytes"]
    int8_accuracy, _ = _onnx_accuracy(int8_file, digits.x_test, digits.y_test)
    assert abs(int8_accuracy - int8["accuracy"]) < 1e-9
    assert int8["fp32_accuracy"] == metrics["student_accuracy"]
    assert int8["agreement_with_fp32"] > 0.9
    assert set(int8["latency_ms"]) == {"batch_1", "batch_64"}
    assert int8["ship"] in ("int8", "fp32") and int8["reason"]
    assert "int8 student" in report.text
    # Which to ship is decided on the validation rows, from the last epoch of each curve.
    advice = metrics["recommendation"]
    validation = advice["validation"]
    assert validation["student"] == history[-1]["validation_accuracy"]
    assert validation["scratch"] == metrics["history_scratch"][-1]["validation_accuracy"]
    assert 0 < validation["teacher"] <= 1
    assert advice["ship"] == (
        "scratch" if validation["student"] < validation["scratch"] else "student"
    )
    assert (
        "Ship scratch.onnx" if advice["ship"] == "scratch" else "Ship student.onnx"
    ) in report.text
    expected_gap = (metrics["student_accuracy"] - metrics["scratch_accuracy"]) / (
        metrics["teacher_accuracy"] - metrics["scratch_accuracy"]
    )
    assert metrics["gap_closed"] == pytest.approx(expected_gap)
    evaluation = metrics["evaluation"]
    for who in ("teacher", "student", "scratch"):
        assert evaluation[who]["accuracy"] == metrics[f"{who}_accuracy"]
        assert sum(map(sum, evaluation[who]["confusion_matrix"])) == len(digits.y_test)
        assert 0 <= evaluation[who]["ece"] <= 1 and evaluation[who]["nll"] > 0
        assert len(evaluation[who]["per_class_accuracy"]) == 10
    for batch in ("batch_1", "batch_64"):
        timing = metrics["latency_ms"][batch]
        assert timing["student_onnx"] > 0 and timing["teacher"] > 0
        assert timing["speedup"] == pytest.approx(timing["teacher"] / timing["student_onnx"])

    report = {
        "service": service.name,
        "format": fmt,
        "submit_to_succeeded_s": round(elapsed, 2),
        "train_seconds": metrics["train_seconds"],
        "teacher_accuracy": metrics["teacher_accuracy"],
        "student_accuracy": metrics["student_accuracy"],
        "agreement": metrics["agreement"],
    }
    out = Path(__file__).resolve().parents[2] / "test-output"
    out.mkdir(exist_ok=True)
    (out / f"e2e-{service.name}-{fmt}.json").write_text(json.dumps(report, indent=2))
    print(report)


def test_automatic_split_is_stratified_and_reported(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    service = production_service
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    body = {"teacher_id": teacher["id"], "train_dataset_id": train["id"]}
    body["training"] = {"epochs": 3}
    body["baseline"] = False
    job = service.client.post("/v1/jobs", json=body).json()
    # Defaults filled in for everything but the ids.
    assert job["student"]["architecture"] == "mlp"
    assert job["method"] == {
        "type": "kd",
        "temperature": 4.0,
        "alpha": 0.1,
        "hint": None,
        "loss": "kl",
        "kd_stop_epoch": None,
    }
    job = service.wait(job["id"])
    assert job["status"] == "succeeded", job
    split = job["split"]
    assert split["method"] == "stratified by class" and split["seed"] == 0
    rows = split["train"]["rows"] + split["validation"]["rows"] + split["test"]["rows"]
    assert rows == train["rows"]
    assert 0.1 < split["test"]["rows"] / rows < 0.2
    assert job["metrics"]["student_accuracy"] > 0.5
    assert job["metrics"]["scratch_accuracy"] is None and job["metrics"]["baseline"] == "off"
    assert job["metrics"]["history_scratch"] == []
    # The default student is sized from the teacher: two equal layers, 10x fewer parameters.
    assert job["student"]["hidden_sizes"] is None
    metrics = job["metrics"]
    sized = metrics["student"]["sized"]
    assert sized["compression"] == 10 and "sized from the teacher" in sized["reason"]
    assert len(sized["hidden_sizes"]) == 2 and sized["hidden_sizes"][0] == sized["hidden_sizes"][1]
    assert metrics["student_parameters"] <= metrics["teacher_parameters"] / 10
    assert metrics["student_parameters"] > metrics["teacher_parameters"] / 20
    assert metrics["latency_ms"]["batch_1"]["speedup"] is not None
    assert job["training"]["learning_rate"] == 0.01


def test_probability_teacher_from_scikit_learn(
    production_service: Service, digits: Digits, tmp_path: Path
) -> None:
    """A scikit-learn model converted to ONNX outputs a label and probabilities."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    flat_train = digits.x_train.reshape(len(digits.x_train), -1)
    flat_test = digits.x_test.reshape(len(digits.x_test), -1)
    model = LogisticRegression(max_iter=500).fit(flat_train, digits.y_train)
    path = tmp_path / "logreg.onnx"
    path.write_bytes(to_onnx(model, flat_train[:1]).SerializeToString())
    np.savez(tmp_path / "train.npz", x=flat_train, y=digits.y_train)
    np.savez(tmp_path / "test.npz", x=flat_test, y=digits.y_test)

    service = production_service
    r = service.upload_teacher(path)
    assert r.status_code == 201, r.text
    teacher = r.json()
    assert teacher["output_kind"] == "probabilities"
    assert "prob" in teacher["output_name"]
    assert teacher["input_shape"] == [64] and teacher["num_classes"] == 10
    train = service.upload_dataset(tmp_path / "train.npz").json()
    test = service.upload_dataset(tmp_path / "test.npz").json()
    job = service.client.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "test_dataset_id": test["id"],
            "training": {"epochs": 15},
        },
    ).json()
    job = service.wait(job["id"])
    assert job["status"] == "succeeded", job
    sk_accuracy = float((model.predict(flat_test) == digits.y_test).mean())
    assert abs(job["metrics"]["teacher_accuracy"] - sk_accuracy) < 1e-6
    assert job["metrics"]["student_accuracy"] > 0.85


def test_int8_students_static_for_a_cnn_and_off_when_asked(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    service = production_service
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    train = service.upload_dataset(digits_files["train"]).json()
    body = {"teacher_id": teacher["id"], "train_dataset_id": train["id"], "transfer": None}
    r = service.client.post(
        "/v1/jobs",
        json={
            **body,
            "student": {"architecture": "cnn", "channels": [8, 8]},
            "training": {"epochs": 2},
        },
    )
    assert r.status_code == 201, r.text
    cnn = service.wait(r.json()["id"])
    assert cnn["status"] == "succeeded", f"{cnn}\n{service.tail()}"
    int8 = cnn["metrics"]["int8"]
    assert int8["status"] == "built" and int8["mode"] == "static", int8  # calibrated
    assert int8["agreement_with_fp32"] > 0.8 and int8["bytes"] > 0

    r = service.client.post("/v1/jobs", json={**body, "quantize": False, "training": {"epochs": 1}})
    off = service.wait(r.json()["id"])
    assert off["status"] == "succeeded" and off["quantize"] is False
    assert off["metrics"]["int8"]["status"] == "off"
    names = {
        a["name"] for a in service.client.get(f"/v1/jobs/{off['id']}/artifacts").json()["data"]
    }
    assert "student.int8.onnx" not in names and "student.onnx" in names
