"""A cluster to break: Postgres, a Redis of its own (so it can be restarted), one API and
workers started and killed at will, with short heartbeats so faults show within seconds."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support import (
    ROOT,
    PostgresDatabase,
    Service,
    base_env,
    create_database,
    drop_database,
    free_port,
    spawn,
    wait_healthy,
)

FAST = {
    "DISTILLERY_HEARTBEAT_SECONDS": "0.5",
    "DISTILLERY_LEASE_TIMEOUT_SECONDS": "4",
    "DISTILLERY_REAPER_INTERVAL_SECONDS": "0.5",
    "DISTILLERY_REPUBLISH_AFTER_SECONDS": "6",
}


@dataclass
class Redis:
    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # No persistence: a restart loses every message, as the fault test wants.
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class Gate:
    """A TCP proxy in front of a server that can be shut: while shut, new connections are
    refused and open ones are cut, as when the server's machine drops off the network."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        with self.lock:
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self.connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # shut
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class Cluster:
    tmp: Path
    db: PostgresDatabase
    redis: Redis
    env: dict[str, str]
    api: Service
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def add_worker(self, name: str, *flags: str, **extra: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{name}.log"
        self.api.logs.append(log)
        proc = spawn(["worker", "--name", name, *flags], {**self.env, **extra}, log)
        self.workers[name] = proc
        self.api.processes.append(proc)
        return proc

    def kill_worker(self, name: str) -> None:
        """kill -9 the whole worker: its parent and the child that runs the job."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def start_api(self, **extra: str) -> Service:
        port = free_port()
        env = {**self.env, "DISTILLERY_API_PORT": str(port), **extra}
        service = Service(name="api", base_url=f"http://127.0.0.1:{port}", env=env)
        service.logs = [self.tmp / f"api-{port}.log"]
        service.processes = [spawn(["api"], env, service.logs[0])]
        wait_healthy(service)
        return service

    def events(self, job_id: str) -> list[dict[str, Any]]:
        page = self.api.client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
        data: list[dict[str, Any]] = page.json()["data"]
        return data

    def wait_for(self, what: str, predicate: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n{self.api.tail()}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    db = create_database()
    redis_server = Redis(port=free_port(), folder=tmp_path)
    redis_server.start()
    env = base_env(
        tmp_path / "data",
        DISTILLERY_DATABASE_URL=db.url,
        DISTILLERY_BROKER_URL=redis_server.url,
        DISTILLERY_QUEUE_NAME=f"distillery-fault-{secrets.token_hex(4)}",
        **FAST,
    )
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    cluster = Cluster(tmp=tmp_path, db=db, redis=redis_server, env=env, api=None)  # type: ignore[arg-type]
    cluster.api = cluster.start_api()
    try:
        yield cluster
    finally:
        cluster.api.stop()
        redis_server.stop()
        drop_database(db)


def job_client(service: Service) -> httpx.Client:
    return service.client
