"""`pip install distillery` gives the client and the CLI alone: installed into a fresh venv,
without torch, onnxruntime or the server's packages, it drives a running service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, Service, TeacherFiles

HEAVY = ("torch", "onnxruntime", "onnx", "fastapi", "sqlalchemy", "celery", "pydantic", "numpy")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("client") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", str(ROOT)], check=True, timeout=600)
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:{os.defpath}", "HOME": str(venv), "COLUMNS": "160"}
    return subprocess.run(
        list(args), env=env, cwd=venv, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_client_installs_alone(client_venv: Path) -> None:
    python = str(client_venv / "bin" / "python")
    probe = (
        "import importlib.util, json; "
        f"print(json.dumps([m for m in {list(HEAVY)!r} if importlib.util.find_spec(m)]))"
    )
    found = _run(client_venv, python, "-c", probe)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == [], "the client pulled in server or ML packages"
    served = _run(client_venv, "distillery", "serve")
    assert served.returncode == 2 and "distillery[server]" in served.stderr


def test_the_client_drives_a_running_service(
    client_venv: Path,
    production_service: Service,
    digits_teacher: TeacherFiles,
    digits_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    url = production_service.base_url

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(client_venv, "distillery", "--url", url, *args)

    teacher = cli("teachers", "upload", str(digits_teacher.onnx), "--json")
    assert teacher.returncode == 0, teacher.stderr
    assert json.loads(teacher.stdout)["status"] == "ready"
    train = cli("datasets", "upload", str(digits_files["train"]), "--json")
    assert train.returncode == 0, train.stderr
    job = cli(
        "jobs",
        "submit",
        "--teacher",
        json.loads(teacher.stdout)["id"],
        "--train",
        json.loads(train.stdout)["id"],
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--watch",
    )
    assert job.returncode == 0, job.stderr
    assert "distilled student" in job.stdout
    job_id = job.stdout.split()[0] if job.stdout.startswith("job_") else None
    listed = cli("jobs", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["data"][0]["status"] == "succeeded"
    newest = json.loads(listed.stdout)["data"][0]["id"]
    assert job_id in (None, newest)
    downloaded = cli("jobs", "download", newest, "--dir", str(tmp_path))
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "student.onnx").stat().st_size > 0
