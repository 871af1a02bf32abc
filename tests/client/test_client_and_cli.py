"""The Python client and the `distillery` CLI against a real embedded service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from distillery import Client, DistilleryError
from tests.support import ROOT, Digits, Service, TeacherFiles, free_port


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
    teacher_seen: list[tuple[int, int]] = []
    data_seen: list[tuple[int, int]] = []
    with Client(embedded_service.base_url) as client:
        teacher = client.upload_teacher(
            digits_teacher.onnx, progress=lambda d, t: teacher_seen.append((d, t))
        )
        assert teacher_seen[-1] == (digits_teacher.onnx.stat().st_size,) * 2
        assert client.get_teacher(teacher["id"])["sha256"] == teacher["sha256"]
        train = client.upload_dataset(
            digits_files["train"], progress=lambda d, t: data_seen.append((d, t))
        )
        assert data_seen[-1] == (digits_files["train"].stat().st_size,) * 2
        assert client.get_dataset(train["id"])["rows"] == train["rows"]

        job = client.create_job(
            {
                "teacher_id": teacher["id"],
                "train_dataset_id": train["id"],
                "training": {"epochs": 3},
            }
        )
        updates: list[tuple[str, int]] = []
        done = client.wait(
            job["id"], on_update=lambda j: updates.append((j["status"], j["epoch"])), timeout=120
        )
        assert done["status"] == "succeeded" and updates[-1] == ("succeeded", 3)
        assert len(updates) >= 2
        assert any(j["id"] == job["id"] for j in client.iter_jobs(page_size=1))
        assert client.list_jobs(limit=1, status="succeeded")["data"][0]["status"] == "succeeded"

        names = {a["name"] for a in client.list_artifacts(job["id"])}
        assert {"student.onnx", "metrics.json", "report.html"} <= names
        sizes: list[tuple[int, int]] = []
        path = client.download_artifact(
            job["id"], "student.onnx", tmp_path, progress=lambda d, t: sizes.append((d, t))
        )
        assert path == tmp_path / "student.onnx" and sizes[-1] == (path.stat().st_size,) * 2
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
        assert bad.value.status == 422 and bad.value.code == "invalid_input"
        assert bad.value.errors[0]["field"] == "training.epochs"
        assert str(bad.value).startswith("422 invalid_input: training.epochs: Input should be")
        assert "\n" not in str(bad.value)

        with pytest.raises(DistilleryError) as missing:
            client.download_artifact(job["id"], "nope.onnx", tmp_path)
        assert missing.value.status == 404 and not (tmp_path / "nope.onnx.partial").exists()


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
                "training": {"epochs": 2},
            }
        )
    )
    # --epochs overrides the file's 2.
    run = _cli(
        embedded_service, "jobs", "submit", "--file", str(job_file), "--epochs", "3", "--watch"
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "distilled student" in run.stdout and "teacher" in run.stdout
    assert "agreement" in run.stdout and "file bytes" in run.stdout
    # Which ONNX to ship: distilled or scratch, int8 or fp32 (decided on the validation rows).
    assert "ship student.onnx" in run.stdout or "ship scratch.onnx" in run.stdout
    assert "int8 or fp32: ship" in run.stdout
    job_id = run.stdout.split()[0]
    assert job_id.startswith("job_")
    shown = json.loads(_cli(embedded_service, "jobs", "watch", job_id, "--json").stdout)
    assert shown["status"] == "succeeded" and shown["training"]["epochs"] == 3
    assert shown["student"]["hidden_sizes"] == [32]

    listing = _cli(embedded_service, "jobs", "list")
    assert listing.returncode == 0 and job_id in listing.stdout
    as_json = json.loads(_cli(embedded_service, "jobs", "list", "--json").stdout)
    assert job_id in [j["id"] for j in as_json["data"]]

    out = tmp_path / "artifacts"
    download = _cli(embedded_service, "jobs", "download", job_id, "--dir", str(out))
    assert download.returncode == 0, download.stderr
    with Client(embedded_service.base_url) as client:
        expected = {a["name"] for a in client.list_artifacts(job_id)}
    assert {p.name for p in out.iterdir()} == expected
    assert {"student.onnx", "metrics.json", "report.html"} <= expected
    assert json.loads((out / "metrics.json").read_text())["student_accuracy"] > 0.5
    one = _cli(
        embedded_service,
        "jobs",
        "download",
        job_id,
        "--dir",
        str(tmp_path / "one"),
        "--name",
        "student.onnx",
    )
    assert one.returncode == 0 and [p.name for p in (tmp_path / "one").iterdir()] == [
        "student.onnx"
    ]

    teacher = _cli(embedded_service, "teachers", "upload", str(digits_teacher.pt2))
    assert teacher.returncode == 0 and "pt2" in teacher.stdout, teacher.stderr
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
    assert long.returncode == 0 and long_id.startswith("job_"), long.stderr
    cancel = _cli(embedded_service, "jobs", "cancel", long_id)
    assert cancel.returncode == 0 and long_id in cancel.stdout
    watched = _cli(embedded_service, "jobs", "watch", long_id)
    assert watched.returncode == 1 and "cancelled" in watched.stderr
    assert "Traceback" not in watched.stderr


def test_cli_errors_are_one_line(embedded_service: Service, tmp_path: Path) -> None:
    bad = _cli(embedded_service, "jobs", "submit", "--teacher", "tch_nope", "--train", "ds_nope")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "tch_nope" in bad.stderr and bad.stderr.startswith("error: 4")

    invalid = _cli(
        embedded_service, "jobs", "submit", "--teacher", "t", "--train", "d", "--epochs", "0"
    )
    assert invalid.returncode == 1 and len(invalid.stderr.strip().splitlines()) == 1
    assert "422 invalid_input: training.epochs" in invalid.stderr

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    upload = _cli(embedded_service, "teachers", "upload", str(garbage))
    assert upload.returncode == 1 and "Traceback" not in upload.stderr
    assert len(upload.stderr.strip().splitlines()) == 1

    missing = _cli(embedded_service, "datasets", "upload", str(tmp_path / "absent.npz"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("training: {epochs: [\n")
    parsed = _cli(embedded_service, "jobs", "submit", "--file", str(broken))
    assert parsed.returncode == 1 and len(parsed.stderr.strip().splitlines()) == 1

    keyed = subprocess.run(
        [
            sys.executable,
            "-m",
            "distillery.cli",
            "--url",
            embedded_service.base_url,
            "jobs",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**embedded_service.env, "DISTILLERY_API_KEY": "not-a-key"},
    )
    assert keyed.returncode == 1 and "401" in keyed.stderr and "not valid" in keyed.stderr

    url = f"http://127.0.0.1:{free_port()}"
    nowhere = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "--url", url, "jobs", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert nowhere.returncode == 1 and f"cannot reach {url}" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr and len(nowhere.stderr.strip().splitlines()) == 1


def test_cli_asks_for_a_gpu_and_hears_why_it_cannot_have_one(
    embedded_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """The embedded default runs no GPU worker: a job that asks for one is refused, naming
    resources.gpu, before anything is queued."""
    with Client(embedded_service.base_url) as client:
        teacher = client.upload_teacher(digits_teacher.onnx)["id"]
        train = client.upload_dataset(digits_files["train"])["id"]
    refused = _cli(
        embedded_service, "jobs", "submit", "--teacher", teacher, "--train", train, "--gpu"
    )
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "422 gpu_unavailable: resources.gpu asks for a GPU" in refused.stderr, refused.stderr
    assert "distillery worker --gpu" in refused.stderr
