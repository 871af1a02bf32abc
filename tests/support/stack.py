"""Running Distillery for tests and benches: the production stack (Postgres, Redis, an API
process and a worker process) and the embedded default (`distillery serve`), real processes
each, with an HTTP client."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.db import PostgresDatabase

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            signal_group(proc, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            signal_group(proc, signal.SIGKILL)


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
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


def wait_healthy(service: Service, timeout: float = 60) -> None:
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


def wait_ready(service: Service, timeout: float = 120) -> None:
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
            # The suite's jobs are small: a default transfer set of at most 3,000 rows keeps
            # them fast (the default size rule has its own tests, tests/worker).
            "DISTILLERY_AUTO_TRANSFER_MAX_ROWS": "3000",
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
        spawn(["api"], env, service.logs[0]),
        spawn(["worker"], env, service.logs[1]),
    ]
    wait_healthy(service)
    wait_ready(service)
    return service


def start_embedded_stack(tmp: Path) -> Service:
    """`distillery serve` with nothing but a data folder: SQLite and a filesystem broker."""
    port = free_port()
    env = base_env(tmp / "data", DISTILLERY_API_PORT=str(port))
    service = Service(name="embedded", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / "serve.log"]
    service.processes = [spawn(["serve"], env, service.logs[0])]
    wait_healthy(service, timeout=90)
    wait_ready(service)
    return service
