"""Parquet tables and image folders through the API, down to a trained student."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support import Digits, Service, TeacherFiles


def test_image_folders_train_a_student(
    production_service: Service, digits: Digits, digits_teacher: TeacherFiles, tmp_path: Path
) -> None:
    """Digits saved as 16x16 PNGs in class folders, resized by the service to the teacher's
    8x8 input: the student trains on them as on any dataset."""
    path = tmp_path / "digits.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, label) in enumerate(
            zip(digits.x_train[:600], digits.y_train[:600], strict=True)
        ):
            pixels = Image.fromarray((image[0] * 255).astype(np.uint8), "L").resize((16, 16))
            buffer = io.BytesIO()
            pixels.save(buffer, format="PNG")
            archive.writestr(f"digit-{label}/{i}.png", buffer.getvalue())
    service = production_service
    r = service.upload_dataset(path, image_size="8x8")
    assert r.status_code == 201, r.text
    dataset = r.json()
    assert dataset["format"] == "images" and dataset["feature_shape"] == [1, 8, 8]
    assert dataset["class_names"] == [f"digit-{d}" for d in range(10)]
    teacher = service.upload_teacher(digits_teacher.onnx).json()
    body = {
        "teacher_id": teacher["id"],
        "train_dataset_id": dataset["id"],
        "training": {"epochs": 10},
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    assert job["metrics"]["student_accuracy"] > 0.6


def test_parquet_upload(production_service: Service, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"f1": [0.5, 1.5], "f2": [1, 2], "y": [1, 0]}), tmp_path / "t.parquet")
    r = production_service.upload_dataset(tmp_path / "t.parquet", label_column="y")
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "parquet" and r.json()["feature_shape"] == [2]
    r = production_service.upload_dataset(tmp_path / "t.parquet", label_column="nope")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "label_column"
