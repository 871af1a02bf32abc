"""Text classifiers end to end on the production stack: a tiny BERT, trained here and saved as
`save_pretrained` saves it, uploaded as a zip; text data as CSV with class names; the default
job distills it into a text student whose ONNX takes input_ids and attention_mask and runs in
onnxruntime with the delivered tokenizer.json. Uploads that would run code are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distillery import class_names, score_texts
from tests.support import Service
from tests.support.text import (
    CLASS_NAMES,
    TextTeacherFiles,
    export_onnx_teacher,
    save_csv,
    text_task,
    train_bert_teacher,
    zip_folder,
)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> TextTeacherFiles:
    folder = tmp_path_factory.mktemp("bert") / "model"
    return train_bert_teacher(folder, text_task(1200, 0), text_task(300, 1), epochs=3)


@pytest.fixture(scope="module")
def text_ids(
    production_service: Service, bert: TextTeacherFiles, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("text-data")
    service = production_service
    teacher = service.upload_teacher(bert.zip)
    assert teacher.status_code == 201, teacher.text
    train = service.upload_dataset(save_csv(folder / "train.csv", text_task(600, 2)))
    test_task = text_task(300, 3)
    test = service.upload_dataset(save_csv(folder / "test.csv", test_task, labels="ids"))
    assert train.status_code == test.status_code == 201, (train.text, test.text)
    return {
        "teacher": teacher.json(),
        "train": train.json(),
        "test": test.json(),
        "task": test_task,
    }


def test_a_text_teacher_and_text_data_are_described(
    text_ids: dict[str, Any], bert: TextTeacherFiles
) -> None:
    teacher, train = text_ids["teacher"], text_ids["train"]
    assert teacher["status"] == "ready" and teacher["format"] == "transformers"
    assert teacher["modality"] == "text" and teacher["class_names"] == CLASS_NAMES
    assert teacher["num_classes"] == 4 and teacher["parameters"] == bert.parameters
    assert teacher["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert teacher["vocab_size"] > 100 and teacher["max_length"] == 64
    assert train["modality"] == "text" and train["format"] == "text-csv"
    assert train["rows"] == 600 and train["labeled"] and train["feature_shape"] == []
    assert train["class_names"] == sorted(CLASS_NAMES)
    assert sum(train["class_counts"].values()) == 600
    assert text_ids["test"]["class_names"] is None and text_ids["test"]["num_classes"] == 4


def test_the_default_text_job_delivers_a_drop_in_student(
    production_service: Service, text_ids: dict[str, Any], tmp_path: Path
) -> None:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    service = production_service
    body = {
        "teacher_id": text_ids["teacher"]["id"],
        "train_dataset_id": text_ids["train"]["id"],
        "test_dataset_id": text_ids["test"]["id"],
    }
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    job = service.wait(r.json()["id"], timeout=600)
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    metrics = job["metrics"]
    assert metrics["modality"] == "text"
    text = metrics["text"]
    assert text["student_architecture"] == "bilstm" and "bilstm" in text["reason"]
    assert "sized from the teacher" in text["reason"]
    started = text["embeddings"]  # by default, from the teacher's safetensors
    assert started["source"] == "teacher", started
    assert started["tensor"] == "bert.embeddings.word_embeddings.weight"
    assert started["tokens"] == text["student_vocab"] and started["teacher_dim"] == 64
    assert 0 < text["student_vocab"] < text["tokenizer_vocab"]
    assert 4 <= text["max_length"] <= 64
    choice = metrics["transfer_spec"]["choice"]
    assert choice["data_kind"] == "text" and choice["synthesize"] == ["mask", "swap", "ngram"]
    assert set(metrics["transfer"]["sources"]) == {"mask", "swap", "ngram"}
    assert metrics["scratch_accuracy"] is not None and metrics["baseline"] == "trained"
    assert metrics["latency_ms"]["batch_32"] is not None
    assert metrics["int8"]["status"] == "built" and metrics["int8"]["mode"] == "dynamic"

    names = {
        a["name"] for a in service.client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    }
    assert {"student.onnx", "tokenizer.json", "scratch.onnx", "report.html"} <= names
    for name in ("student.onnx", "tokenizer.json"):
        (tmp_path / name).write_bytes(
            service.client.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content
        )
    session = ort.InferenceSession(
        str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"]
    )
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.type == "tensor(int64)" for i in inputs)
    assert session.get_outputs()[0].name == "logits"
    # Tokenized with the delivered tokenizer, padded to this batch's longest text.
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"))
    tokenizer.enable_truncation(max_length=text["max_length"])
    task = text_ids["task"]
    encoded = tokenizer.encode_batch(task.texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    logits = session.run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
    )[0]
    assert logits.shape == (len(task.texts), 4)
    accuracy = float((logits.argmax(1) == np.array(task.labels)).mean())
    # Padding to the batch's longest text instead of the job's length changes nothing.
    assert accuracy == pytest.approx(metrics["student_accuracy"], abs=0.02)
    assert accuracy > 0.4  # four classes: well above chance
    report = service.client.get(f"/v1/jobs/{job['id']}/artifacts/report.html").text
    assert "distilled student" in report
    # The CLI scores texts with the downloaded student, naming the teacher's classes.
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillery.cli",
            "score",
            str(tmp_path / "student.onnx"),
            str(tmp_path / "tokenizer.json"),
            *task.texts[:5],
            "--metrics",
            str(tmp_path / "metrics.json"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(scored.stdout)
    assert [r["text"] for r in rows] == task.texts[:5]
    assert all(r["name"] in CLASS_NAMES and abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)
    assert [r["label"] for r in rows] == logits[:5].argmax(1).tolist()
    # The same from Python.
    names = class_names(tmp_path / "metrics.json")
    found = score_texts(
        tmp_path / "student.onnx", tmp_path / "tokenizer.json", task.texts[:5], names=names
    )
    assert [(s.text, s.label, s.name) for s in found] == [
        (r["text"], r["label"], r["name"]) for r in rows
    ]


def test_an_onnx_text_teacher_in_optimums_layout(
    production_service: Service, bert: TextTeacherFiles, text_ids: dict[str, Any], tmp_path: Path
) -> None:
    service = production_service
    teacher = service.upload_teacher(export_onnx_teacher(bert, tmp_path / "onnx-model"))
    assert teacher.status_code == 201, teacher.text
    found = teacher.json()
    assert found["status"] == "ready" and found["format"] == "onnx-text", found
    assert found["input_names"] == ["input_ids", "attention_mask"] and found["num_classes"] == 4
    assert found["class_names"] == CLASS_NAMES  # from config.json beside model.onnx
    body = {
        "teacher_id": found["id"],
        "train_dataset_id": text_ids["train"]["id"],
        "student": {"architecture": "bag", "init_embeddings": "teacher"},
        "training": {"epochs": 3},
        "transfer": {"synthesize": "mask", "size": 500},
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"], timeout=600)
    assert job["status"] == "succeeded", f"{job}\n{service.tail()}"
    metrics = job["metrics"]
    assert (
        metrics["teacher"]["id"] == found["id"] and metrics["text"]["student_architecture"] == "bag"
    )
    assert metrics["text"]["input_names"] == ["input_ids", "attention_mask"]
    assert metrics["transfer"]["sources"] == {"mask": 500}
    # The student's embeddings started from the teacher's, read from model.onnx's initializer.
    started = metrics["text"]["embeddings"]
    assert started["source"] == "teacher" and "word_embeddings" in started["tensor"], started
    assert started["teacher_dim"] == 64 and started["student_dim"] == 64
    assert started["tokens"] == metrics["text"]["student_vocab"]
    assert 0.0 < started["explained_variance"] <= 1.0


def _refused(service: Service, path: Path, words: str) -> None:
    r = service.upload_teacher(path)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "teacher_invalid", problem
    assert words in problem["detail"], problem


def test_uploads_that_would_run_code_are_refused(
    production_service: Service, bert: TextTeacherFiles, tmp_path: Path
) -> None:
    service, folder = production_service, bert.folder
    config = json.loads((folder / "config.json").read_text())
    remote = {**config, "auto_map": {"AutoModelForSequenceClassification": "model.Evil"}}
    cases = [
        (
            zip_folder(folder, tmp_path / "code.zip", {"modeling_evil.py": b"import os"}),
            "carries code",
        ),
        (zip_folder(folder, tmp_path / "bin.zip", {"pytorch_model.bin": b"\x80\x04"}), "a pickle"),
        (
            zip_folder(
                folder,
                tmp_path / "remote.zip",
                {"config.json": json.dumps(remote).encode()},
                skip=("config.json",),
            ),
            "auto_map",
        ),
        (zip_folder(folder, tmp_path / "notok.zip", skip=("tokenizer.json",)), "tokenizer.json"),
        (
            zip_folder(folder, tmp_path / "noweights.zip", skip=("model.safetensors",)),
            "model.safetensors",
        ),
    ]
    not_a_classifier = {**config, "architectures": ["BertModel"]}
    cases.append(
        (
            zip_folder(
                folder,
                tmp_path / "head.zip",
                {"config.json": json.dumps(not_a_classifier).encode()},
                skip=("config.json",),
            ),
            "sequence-classification",
        )
    )
    for path, words in cases:
        _refused(service, path, words)


def test_text_data_and_jobs_that_cannot_work_are_refused(
    production_service: Service, text_ids: dict[str, Any], tmp_path: Path
) -> None:
    service = production_service
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\nthe soup was good,food good\n ,film bad\n")
    r = service.upload_dataset(empty)
    assert r.status_code == 422 and "row 3: the text is empty" in r.json()["detail"], r.text
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9 was good,food good\n".encode("latin-1"))
    r = service.upload_dataset(latin)
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"], r.text
    r = service.upload_dataset(save_csv(tmp_path / "x.csv", text_task(30, 4)), text_column="review")
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "text_column" and "review" in r.json()["detail"]

    unknown = tmp_path / "unknown.csv"
    rows = "\n".join(
        f"the soup was good,{'food good' if i % 2 else 'soup great'}" for i in range(40)
    )
    unknown.write_text("text,label\n" + rows + "\n")
    data = service.upload_dataset(unknown).json()
    body = {"teacher_id": text_ids["teacher"]["id"], "train_dataset_id": data["id"]}
    r = service.client.post("/v1/jobs", json=body)
    assert r.status_code == 422 and r.json()["code"] == "labels_unknown", r.text
    assert "soup great" in r.json()["detail"]
    r = service.client.post(
        "/v1/jobs",
        json={
            **body,
            "train_dataset_id": text_ids["train"]["id"],
            "student": {"architecture": "cnn", "channels": [8]},
        },
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "student.architecture", r.text
    r = service.client.post(
        "/v1/jobs",
        json={
            **body,
            "train_dataset_id": text_ids["train"]["id"],
            "transfer": {"synthesize": "mixup", "size": 10},
        },
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "transfer.synthesize", r.text
