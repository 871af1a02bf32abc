"""Latency of the API under 50 concurrent pollers while a job trains on the worker.

    .venv/bin/python bench/load.py [--clients 50] [--duration 60]

Starts the production stack as subprocesses (a fresh Postgres database, Redis, the API and a
Celery worker), uploads a small teacher (an MLP trained here on scikit-learn's digits,
exported to ONNX) and the digits, submits a long job and waits until it is training. Then
`--clients` asyncio clients, each with an API key of its own (so each has its own rate-limit
bucket, as real clients do), alternately poll the job's status and list jobs for
`--duration` seconds. Prints the request count, errors (any status but 200, or a transport
error; the target is zero), throughput, and p50 / p99 latency. Prints figures; asserts
nothing. Client and servers share this machine's cores, so latency includes that contention."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    REDIS_URL,
    Service,
    base_env,
    create_database,
    drop_database,
    free_port,
    spawn,
    wait_healthy,
)
from tests.support.teachers import save_onnx  # noqa: E402


def make_teacher_and_data(folder: Path) -> tuple[Path, Path]:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(10):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    teacher = folder / "teacher.onnx"
    save_onnx(model, xt[:4], teacher, "pixels", "logits")
    data = folder / "digits.npz"
    np.savez(data, x=x, y=y)
    return teacher, data


def start_stack(tmp: Path, database_url: str) -> Service:
    port = free_port()
    env = base_env(
        tmp / "data",
        DISTILLERY_DATABASE_URL=database_url,
        DISTILLERY_BROKER_URL=REDIS_URL,
        DISTILLERY_QUEUE_NAME=f"distillery-bench-{secrets.token_hex(4)}",
        DISTILLERY_API_PORT=str(port),
        DISTILLERY_LOG_LEVEL="WARNING",
    )
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    service = Service(name="bench", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / "api.log", tmp / "worker.log"]
    service.processes = [
        spawn(["api"], env, service.logs[0]),
        spawn(["worker"], env, service.logs[1]),
    ]
    wait_healthy(service)
    return service


def create_keys(database_url: str, count: int) -> list[str]:
    """Keys for the anonymous tenant, so the clients see the job submitted without one."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from app.auth import create_key
    from app.models import LOCAL_TENANT

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            keys = [create_key(session, LOCAL_TENANT, f"bench-{i}")[1] for i in range(count)]
            session.commit()
    finally:
        engine.dispose()
    return keys


async def client_loop(
    base_url: str,
    key: str,
    job_id: str,
    deadline: float,
    latencies: list[float],
    errors: Counter[str],
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        turn = 0
        while time.monotonic() < deadline:
            url = f"/v1/jobs/{job_id}" if turn % 2 == 0 else "/v1/jobs?limit=20"
            turn += 1
            started = time.perf_counter()
            try:
                response = await client.get(url)
                if response.status_code != 200:
                    errors[f"HTTP {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - started)


async def hammer(
    base_url: str, keys: list[str], job_id: str, duration: float
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + duration
    await asyncio.gather(
        *(client_loop(base_url, k, job_id, deadline, latencies, errors) for k in keys)
    )
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of polling")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as folder:
        tmp = Path(folder)
        teacher_path, data_path = make_teacher_and_data(tmp)
        db = create_database()
        service = start_stack(tmp, db.url)
        try:
            client = service.client
            teacher = service.upload_teacher(teacher_path).json()["id"]
            dataset = service.upload_dataset(data_path).json()["id"]
            job = client.post(
                "/v1/jobs",
                json={
                    "teacher_id": teacher,
                    "train_dataset_id": dataset,
                    "training": {"epochs": 1000, "batch_size": 32},
                },
            ).json()
            job = service.wait(job["id"], timeout=120, until={"running", "failed", "succeeded"})
            while job["status"] == "running" and not job.get("epoch"):
                time.sleep(0.5)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            print(f"job {job['id']} {job['status']} (epoch {job.get('epoch')}) before the load")
            keys = create_keys(db.url, args.clients)
            latencies, errors = asyncio.run(
                hammer(service.base_url, keys, job["id"], args.duration)
            )
            after = client.get(f"/v1/jobs/{job['id']}").json()
            print(f"job {after['id']} {after['status']} (epoch {after.get('epoch')}) after it")
            client.post(f"/v1/jobs/{job['id']}/cancel")
            ms = sorted(1000 * t for t in latencies)
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            print(
                f"{args.clients} clients for {args.duration:.0f} s: {len(ms)} requests "
                f"({len(ms) / args.duration:.0f}/s), errors {sum(errors.values())} {dict(errors)}"
            )
            print(
                f"latency p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"
            )
        finally:
            service.stop()
            drop_database(db)


if __name__ == "__main__":
    main()
