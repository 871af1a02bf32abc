"""Shared fixtures: real services, real processes, data made in the test."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ARTIFACTS = ROOT / "test-output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sqlalchemy_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{dbname}"


@dataclass
class PostgresDatabase:
    name: str
    url: str


def create_database() -> PostgresDatabase:
    name = f"distillery_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PostgresDatabase(name=name, url=_sqlalchemy_url(name))


def drop_database(db: PostgresDatabase) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture
def postgres_database() -> Iterator[PostgresDatabase]:
    db = create_database()
    try:
        yield db
    finally:
        drop_database(db)


@dataclass
class Service:
    """A running Distillery: its processes, base URL and an HTTP client."""

    name: str
    base_url: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, timeout=120)

    def alive(self) -> bool:
        return self.client.get("/healthz").status_code == 200

    def upload_teacher(self, path: Path) -> httpx.Response:
        with path.open("rb") as fh:
            return self.client.post("/v1/teachers", files={"file": (path.name, fh)})

    def upload_dataset(self, path: Path, **form: str) -> httpx.Response:
        with path.open("rb") as fh:
            return self.client.post("/v1/datasets", files={"file": (path.name, fh)}, data=form)

    def wait(self, job_id: str, timeout: float = 300, until: set[str] | None = None) -> Any:
        until = until or {"succeeded", "failed", "cancelled"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            time.sleep(0.25)
        raise AssertionError(
            f"job {job_id} still {job['status']} after {timeout} s:\n{self.tail()}"
        )

    def tail(self, lines: int = 60) -> str:
        out = []
        for log in self.logs:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        self.client.close()
        for proc in self.processes:
            _signal_group(proc, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    # A session of its own: stop() ends the whole group, worker children included.
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )


def _wait_healthy(service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in service.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{service.name} process exited:\n{service.tail()}")
        try:
            if service.alive():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{service.name} did not become healthy:\n{service.tail()}")


def _wait_ready(service: Service, timeout: float = 120) -> None:
    """Until /readyz answers 200: the database, the broker and both worker pools are up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.client.get("/readyz").status_code == 200:
            return
        time.sleep(0.3)
    raise RuntimeError(f"{service.name} did not become ready:\n{service.tail()}")


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(
        {
            "DISTILLERY_DATA_DIR": str(data_dir),
            "DISTILLERY_LOG_LEVEL": "INFO",
            "DISTILLERY_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            "OMP_NUM_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_production_stack(tmp: Path, db: PostgresDatabase) -> Service:
    """Postgres + Redis + a separate API process and a separate Celery worker process."""
    port = free_port()
    env = base_env(
        tmp / "data",
        DISTILLERY_DATABASE_URL=db.url,
        DISTILLERY_BROKER_URL=REDIS_URL,
        DISTILLERY_QUEUE_NAME=f"distillery-test-{secrets.token_hex(4)}",
        DISTILLERY_API_PORT=str(port),
    )
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    service = Service(name="production", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / "api.log", tmp / "worker.log"]
    service.processes = [
        _spawn(["api"], env, service.logs[0]),
        _spawn(["worker"], env, service.logs[1]),
    ]
    _wait_healthy(service)
    _wait_ready(service)
    return service


def start_embedded_stack(tmp: Path) -> Service:
    """`distillery serve` with nothing but a data folder: SQLite and a filesystem broker."""
    port = free_port()
    env = base_env(tmp / "data", DISTILLERY_API_PORT=str(port))
    service = Service(name="embedded", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / "serve.log"]
    service.processes = [_spawn(["serve"], env, service.logs[0])]
    _wait_healthy(service, timeout=90)
    _wait_ready(service)
    return service


@pytest.fixture(scope="session")
def production_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    db = create_database()
    service = start_production_stack(tmp_path_factory.mktemp("production"), db)
    try:
        yield service
    finally:
        service.stop()
        drop_database(db)


@pytest.fixture(scope="session")
def embedded_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_embedded_stack(tmp_path_factory.mktemp("embedded"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(params=["production", "embedded"])
def service(request: pytest.FixtureRequest) -> Service:
    return request.getfixturevalue(f"{request.param}_service")


# ---- data and teachers made in the test -------------------------------------------------


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    cut = 1300
    return Digits(x[:cut], y[:cut], x[cut:], y[cut:])


@dataclass(frozen=True)
class TeacherFiles:
    onnx: Path
    pt2: Path
    accuracy: float
    parameters: int


@pytest.fixture(scope="session")
def digits_teacher(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> TeacherFiles:
    """An MLP teacher (64-512-512-10) trained on digits, exported to ONNX and .pt2."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )
    x = torch.from_numpy(digits.x_train)
    y = torch.from_numpy(digits.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(digits.x_test)).argmax(1).numpy()
    accuracy = float((pred == digits.y_test).mean())
    folder = tmp_path_factory.mktemp("teacher")
    example = (x[:4],)
    batch = torch.export.Dim("batch")
    onnx_path = folder / "teacher.onnx"
    torch.onnx.export(
        model,
        example,
        str(onnx_path),
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
        dynamo=True,
    )
    pt2_path = folder / "teacher.pt2"
    torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: batch},)), pt2_path)
    parameters = sum(p.numel() for p in model.parameters())
    return TeacherFiles(onnx=onnx_path, pt2=pt2_path, accuracy=accuracy, parameters=parameters)


@pytest.fixture(scope="session")
def digits_files(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("digits")
    files = {
        "train": folder / "digits_train.npz",
        "test": folder / "digits_test.npz",
        "unlabeled": folder / "digits_unlabeled.npz",
    }
    np.savez(files["train"], x=digits.x_train, y=digits.y_train)
    np.savez(files["test"], x=digits.x_test, y=digits.y_test)
    np.savez(files["unlabeled"], x=digits.x_train)
    return files
