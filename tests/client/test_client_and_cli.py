"""The Python client and the `distillery` CLI against a real embedded service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from distillery import Client, DistilleryError
from tests.conftest import ROOT, Digits, Service, TeacherFiles, free_port


def _cli(service: Service, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distillery.cli", "--url", service.base_url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**service.env, "COLUMNS": "160"},
    )


def test_client_round_trip(
    embedded_service: Service,
    digits: Digits,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    seen: list[tuple[int, int]] = []
    with Client(embedded_service.base_url) as client:
        teacher = client.upload_teacher(
            digits_teacher.onnx, progress=lambda d, t: seen.append((d, t))
        )
        assert seen[-1] == (digits_teacher.onnx.stat().st_size,) * 2
        train = client.upload_dataset(digits_files["train"])
        job = client.create_job(
            {
                "teacher_id": teacher["id"],
                "train_dataset_id": train["id"],
                "training": {"epochs": 3},
            }
        )
        updates: list[str] = []
        done = client.wait(job["id"], on_update=lambda j: updates.append(j["status"]))
        assert done["status"] == "succeeded" and updates[-1] == "succeeded"
        assert any(j["id"] == job["id"] for j in client.iter_jobs())
        path = client.download_artifact(job["id"], "student.onnx", tmp_path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: digits.x_test[:5]})[0]
        assert out.shape == (5, 10)
        assert [e["type"] for e in client.events(job["id"])][-1] == "state"

        with pytest.raises(DistilleryError) as bad:
            client.create_job(
                {
                    "teacher_id": teacher["id"],
                    "train_dataset_id": train["id"],
                    "training": {"epochs": 0},
                }
            )
        assert bad.value.status == 422 and bad.value.errors[0]["field"] == "training.epochs"
        assert str(bad.value).startswith("422 invalid_input: training.epochs")
        assert "\n" not in str(bad.value)


def test_cli_flow(
    embedded_service: Service,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    job_file = tmp_path / "experiment.yaml"
    job_file.write_text(
        yaml.safe_dump(
            {
                "teacher_file": str(digits_teacher.onnx),
                "train_file": str(digits_files["train"]),
                "student": {"hidden_sizes": [32]},
                "training": {"epochs": 4},
            }
        )
    )
    run = _cli(embedded_service, "jobs", "submit", "--file", str(job_file), "--watch")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "distilled student" in run.stdout and "teacher" in run.stdout
    job_id = run.stdout.split()[0]
    assert job_id.startswith("job_")

    listing = _cli(embedded_service, "jobs", "list")
    assert listing.returncode == 0 and job_id in listing.stdout
    as_json = _cli(embedded_service, "jobs", "list", "--json")
    assert job_id in as_json.stdout and as_json.stdout.lstrip().startswith("{")

    out = tmp_path / "artifacts"
    download = _cli(embedded_service, "jobs", "download", job_id, "--dir", str(out))
    assert download.returncode == 0, download.stderr
    assert {p.name for p in out.iterdir()} >= {"student.onnx", "metrics.json", "report.html"}

    teacher = _cli(embedded_service, "teachers", "upload", str(digits_teacher.pt2))
    assert teacher.returncode == 0 and "pt2" in teacher.stdout
    dataset = _cli(embedded_service, "datasets", "upload", str(digits_files["unlabeled"]))
    assert dataset.returncode == 0 and "unlabeled" in dataset.stdout

    teacher_id = teacher.stdout.split()[0]
    train_id = _cli(
        embedded_service, "datasets", "upload", str(digits_files["train"])
    ).stdout.split()[0]
    long = _cli(
        embedded_service,
        "jobs",
        "submit",
        "--teacher",
        teacher_id,
        "--train",
        train_id,
        "--epochs",
        "900",
        "--batch-size",
        "16",
    )
    long_id = long.stdout.split()[0]
    cancel = _cli(embedded_service, "jobs", "cancel", long_id)
    assert cancel.returncode == 0 and long_id in cancel.stdout
    watched = _cli(embedded_service, "jobs", "watch", long_id)
    assert watched.returncode == 1 and "cancelled" in watched.stderr


def test_cli_errors_are_one_line(embedded_service: Service, tmp_path: Path) -> None:
    bad = _cli(embedded_service, "jobs", "submit", "--teacher", "tch_nope", "--train", "ds_nope")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "422" in bad.stderr and "tch_nope" in bad.stderr

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    upload = _cli(embedded_service, "teachers", "upload", str(garbage))
    assert upload.returncode == 1 and "Traceback" not in upload.stderr

    nowhere = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillery.cli",
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "jobs",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert nowhere.returncode == 1 and "cannot reach" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr
