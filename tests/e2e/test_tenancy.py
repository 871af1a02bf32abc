"""API keys and tenants: another tenant's ids answer 404 on every route."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import (
    ROOT,
    Service,
    TeacherFiles,
    base_env,
    free_port,
    spawn,
    wait_healthy,
)


def _create_key(service: Service, tenant: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "keys", "create", "--tenant", tenant],
        env=service.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    secret = done.stdout.splitlines()[0]
    assert secret.startswith("dk_") and tenant in done.stdout
    return secret


@pytest.fixture(scope="module")
def tenants(
    production_service: Service, digits_teacher: TeacherFiles, digits_files: dict[str, Path]
) -> dict[str, object]:
    service = production_service
    a = httpx.Client(
        base_url=service.base_url,
        timeout=120,
        headers={"Authorization": f"Bearer {_create_key(service, 'acme')}"},
    )
    b = httpx.Client(
        base_url=service.base_url,
        timeout=120,
        headers={"Authorization": f"Bearer {_create_key(service, 'globex')}"},
    )
    with digits_teacher.onnx.open("rb") as fh:
        teacher = a.post("/v1/teachers", files={"file": ("t.onnx", fh)}).json()
    with digits_files["train"].open("rb") as fh:
        dataset = a.post("/v1/datasets", files={"file": ("d.npz", fh)}).json()
    job = a.post(
        "/v1/jobs",
        json={
            "teacher_id": teacher["id"],
            "train_dataset_id": dataset["id"],
            "training": {"epochs": 2},
        },
    ).json()
    return {"a": a, "b": b, "teacher": teacher["id"], "dataset": dataset["id"], "job": job["id"]}


def test_another_tenant_gets_404_on_every_route(
    production_service: Service, tenants: dict[str, object]
) -> None:
    a, b = tenants["a"], tenants["b"]
    assert isinstance(a, httpx.Client) and isinstance(b, httpx.Client)
    # The job ran under acme: wait for it through acme's key.
    job_id = str(tenants["job"])
    for _ in range(600):
        if a.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.25)
    assert a.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    values = {
        "teacher_id": tenants["teacher"],
        "dataset_id": tenants["dataset"],
        "job_id": job_id,
        "name": "student.onnx",
    }
    paths = a.get("/openapi.json").json()["paths"]
    walked = 0
    for path, methods in paths.items():
        if "{" not in path:
            continue
        url = path.format(**values)
        for method in methods:
            assert a.request(method.upper(), url).status_code in (200, 201), (method, url)
            other = b.request(method.upper(), url)
            assert other.status_code == 404, (method, url, other.text)
            anonymous = httpx.request(method.upper(), production_service.base_url + url)
            assert anonymous.status_code == 404, (method, url)
            walked += 1
    assert walked >= 8  # teacher, dataset, job, cancel, events, stream, artifacts, artifact

    # Listings and submissions see only the tenant's own things.
    for listing in ("/v1/teachers", "/v1/datasets", "/v1/jobs"):
        ids = [item["id"] for item in b.get(listing).json()["data"]]
        assert not set(ids) & {tenants["teacher"], tenants["dataset"], job_id}
    r = b.post(
        "/v1/jobs", json={"teacher_id": tenants["teacher"], "train_dataset_id": tenants["dataset"]}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "teacher_id"


def test_bad_keys_are_refused(production_service: Service) -> None:
    base = production_service.base_url
    for header in ("Bearer dk_not_a_key", "Basic abc", "Bearer"):
        r = httpx.get(f"{base}/v1/jobs", headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_a_revoked_key_stops_working_within_the_key_cache_time(
    production_service: Service,
) -> None:
    secret = _create_key(production_service, "initech")
    headers = {"Authorization": f"Bearer {secret}"}
    url = f"{production_service.base_url}/v1/jobs"
    assert httpx.get(url, headers=headers).status_code == 200  # looked up, then cached
    done = subprocess.run(
        [sys.executable, "-m", "distillery.cli", "keys", "revoke", secret],
        env=production_service.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "revoked key_" in done.stdout and "initech" in done.stdout
    revoked = time.monotonic()
    while httpx.get(url, headers=headers).status_code == 200:
        assert time.monotonic() - revoked < 5.0 + 2.0, "the revoked key still works"
        time.sleep(0.2)
    r = httpx.get(url, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_keys_are_required_off_loopback(production_service: Service, tmp_path: Path) -> None:
    """Bound to an address that is not loopback's usual name, anonymous access is off."""
    port = free_port()
    env = {
        **production_service.env,
        "DISTILLERY_API_HOST": "127.0.0.2",
        "DISTILLERY_API_PORT": str(port),
    }
    env = {
        **base_env(tmp_path / "data"),
        **{k: v for k, v in env.items() if k.startswith("DISTILLERY_")},
    }
    service = Service(name="keys", base_url=f"http://127.0.0.2:{port}", env=env)
    service.logs = [tmp_path / "api.log"]
    service.processes = [spawn(["api"], env, service.logs[0])]
    try:
        wait_healthy(service)
        assert httpx.get(f"{service.base_url}/v1/jobs").status_code == 401
        key = _create_key(production_service, "initech")
        r = httpx.get(f"{service.base_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert "every request needs an API key" in service.logs[0].read_text()
    finally:
        service.stop()
