"""Bounds on what a client can ask of the service, on both stacks: datasets that hit a parser
limit, jobs bigger than a worker, filenames with control characters, and the headers that keep
a browser from reading an artifact or the dashboard as something else. Each refusal is a 422
naming the field, its code and the setting that holds the limit."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.app.live import extra_api
from tests.support import Service, TeacherFiles

_UPLOADS: dict[str, dict[str, str]] = {}


@pytest.fixture
def ids(
    service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> dict[str, str]:
    """A teacher and the digits training set on this stack (uploaded once a stack)."""
    if service.name not in _UPLOADS:
        teacher = service.upload_teacher(digits_teacher.onnx)
        train = service.upload_dataset(digits_files["train"])
        assert teacher.status_code == train.status_code == 201, (teacher.text, train.text)
        _UPLOADS[service.name] = {"teacher": teacher.json()["id"], "train": train.json()["id"]}
    return _UPLOADS[service.name]


def _problem(r: Any, field: str, code: str, *words: str) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = r.json()
    assert problem["code"] == code, problem
    assert field in [e["field"] for e in problem["errors"]], problem
    for word in words:
        assert word in problem["detail"], problem
    return problem


# ---- datasets at the parsers' limits ------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _parquet(columns: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({f"c{i}": pa.array(np.zeros(2)) for i in range(columns)})
    pq.write_table(table, buffer)
    return buffer.getvalue()


DATASETS = [
    # (file name, bytes, form, field, words in the detail)
    (
        "line.csv",
        b"a,label\n" + b"1," * 3_000_000 + b"0\n",
        {},
        "file",
        "DISTILLERY_MAX_CSV_LINE_BYTES",
    ),
    (
        "header.csv",
        b",".join(b"c%d" % i for i in range(1_001)) + b"\n",
        {},
        "file",
        "DISTILLERY_MAX_TABLE_COLUMNS",
    ),
    (
        "row.npz",
        _npz(x=np.random.default_rng(0).integers(0, 255, (2, 3 * 2**20 + 1), np.uint8)),
        {},
        "file",
        "DISTILLERY_MAX_DATASET_FEATURES",
    ),
    ("wide.parquet", _parquet(1_001), {}, "file", "DISTILLERY_MAX_TABLE_COLUMNS"),
    (
        "big.zip",
        _zip([("a/1.png", _png(4_000, 3_000)), ("b/1.png", _png(4, 4))]),
        {"image_size": "8x8"},
        "file",
        "DISTILLERY_MAX_IMAGE_PIXELS",
    ),
    (
        "raw.zip",
        _zip([("a/1.png", _png(2_000, 2_000)), ("b/1.png", _png(4, 4))]),
        {},
        "file",
        "DISTILLERY_MAX_DATASET_FEATURES",
    ),
    (
        "many.zip",
        _zip([(f"c/{i}.png", b"") for i in range(1_001)]),
        {},
        "file",
        "DISTILLERY_MAX_IMAGES",
    ),
    ("label.csv", b"a,label\n1,0\n", {"label_column": "x" * 300}, "label_column", "255"),
]


_LIMITED: dict[str, Service] = {}


@pytest.fixture
def limited(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Service:
    """An API beside the stack with two limits lowered (the others at their defaults), so
    that a file under the test stacks' 8 MiB upload limit can reach them."""
    if service.name not in _LIMITED:
        folder = tmp_path_factory.mktemp("limited")
        limits = {"DISTILLERY_MAX_TABLE_COLUMNS": "1000", "DISTILLERY_MAX_IMAGES": "1000"}
        _LIMITED[service.name] = extra_api(service, folder, **limits)
    return _LIMITED[service.name]


@pytest.fixture(scope="module", autouse=True)
def _stop_limited() -> Any:
    yield
    for api in _LIMITED.values():
        api.stop()
    _LIMITED.clear()


@pytest.mark.parametrize(
    ("name", "data", "form", "field", "words"), DATASETS, ids=[d[0] for d in DATASETS]
)
def test_datasets_at_a_parser_limit(
    limited: Service,
    tmp_path: Path,
    name: str,
    data: bytes,
    form: dict[str, str],
    field: str,
    words: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    r = limited.upload_dataset(path, **form)
    code = "invalid_input" if field == "label_column" else "dataset_invalid"
    _problem(r, field, code, words)
    assert limited.alive()


# ---- jobs bigger than a worker ------------------------------------------------------------


JOBS = [
    # The issue's: three hidden layers of 65,536 (8.6 billion parameters).
    ({"student": {"hidden_sizes": [65_536] * 3}}, "student.hidden_sizes", "student_too_large"),
    (
        {"student": {"architecture": "cnn", "channels": [4_096] * 8}},
        "student.channels",
        "student_too_large",
    ),
    ({"student": {"max_parameters": 10**12}}, "student.max_parameters", "student_too_large"),
    (
        {"assistants": {"hidden_sizes": [[32_768, 32_768]]}},
        "assistants.hidden_sizes",
        "student_too_large",
    ),
    (
        {"student": {"hidden_sizes": [8_192, 8_192]}, "training": {"batch_size": 65_536}},
        "training.batch_size",
        "job_memory_limit",
    ),
    (
        {"transfer": {"synthesize": ["noise", "mixup", "shift"], "size": 5_000_000}},
        "transfer.size",
        "job_memory_limit",
    ),
]


@pytest.mark.parametrize(("change", "field", "code"), JOBS, ids=[j[1] + "-" + j[2] for j in JOBS])
def test_jobs_bigger_than_a_worker_are_refused(
    service: Service, ids: dict[str, str], change: dict[str, Any], field: str, code: str
) -> None:
    body = {"teacher_id": ids["teacher"], "train_dataset_id": ids["train"], **change}
    r = service.client.post("/v1/jobs", json=body)
    setting = "STUDENT_PARAMETERS" if code == "student_too_large" else "JOB_MEMORY_BYTES"
    limit = "100,000,000" if code == "student_too_large" else "8.0 GiB"
    _problem(r, field, code, f"DISTILLERY_MAX_{setting}", limit)


# ---- filenames and headers ----------------------------------------------------------------


def _raw_upload(service: Service, route: str, filename: bytes, data: bytes) -> Any:
    """A multipart upload written by hand: a client library would escape a filename's control
    characters; a hostile client sends them raw."""
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--xyz--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    return service.client.post(route, content=body, headers=headers)


def test_control_characters_are_stripped_from_filenames(
    service: Service, digits_teacher: TeacherFiles
) -> None:
    hostile = "dig\x00its\x1b[31m\u202e\x07\x7f train\x9b.npz".encode()
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((30, 4), np.float32), y=np.arange(30) % 3)
    r = _raw_upload(service, "/v1/datasets", hostile, buffer.getvalue())
    assert r.status_code == 201, r.text
    assert r.json()["filename"] == "digits[31m train.npz"
    listed = service.client.get(f"/v1/datasets/{r.json()['id']}").json()
    assert listed["filename"] == "digits[31m train.npz"
    r = _raw_upload(service, "/v1/teachers", b"\x01\x02\x03", digits_teacher.onnx.read_bytes())
    assert r.status_code == 201 and r.json()["filename"] == "teacher", r.text


def test_dashboard_pages_carry_nosniff_and_a_policy(service: Service) -> None:
    for page in ("/dashboard/", "/dashboard/job", "/dashboard/new"):
        r = service.client.get(page)
        policy = r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self' 'sha256-" in policy and "'unsafe-inline'" not in policy, policy
    for route in ("/v1/jobs", "/v1/jobs/job_nope", "/dashboard/static/common.js", "/healthz"):
        assert service.client.get(route).headers["x-content-type-options"] == "nosniff", route


def test_artifacts_carry_nosniff_and_a_policy(
    embedded_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> None:
    """The artifact route is one route on both stacks: one job, on the embedded stack."""
    service = embedded_service
    body = {
        "teacher_id": service.upload_teacher(digits_teacher.onnx).json()["id"],
        "train_dataset_id": service.upload_dataset(digits_files["train"]).json()["id"],
        "student": {"hidden_sizes": [8]},
        "training": {"epochs": 1},
        "baseline": False,
    }
    job = service.wait(service.client.post("/v1/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded", job
    for name in ("report.html", "metrics.json", "student.onnx"):
        r = service.client.get(f"/v1/jobs/{job['id']}/artifacts/{name}")
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        policy = r.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "sandbox" in policy, policy
        if name == "metrics.json":

            def refuse(token: str) -> None:
                raise AssertionError(f"{token} in metrics.json")

            json.loads(r.text, parse_constant=refuse)
