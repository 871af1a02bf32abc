"""What the API costs beyond its database (issue 15's targets).

    .venv/bin/python bench/api.py [--seconds 10] [--connections 50] [--pollers 200]

In one run, on one Postgres database:
- the production stack (`distillery api` and `distillery worker`, Redis), as deployed: every
  request carries an API key and rate limits are on (set high enough never to refuse);
- the baseline: a bare FastAPI plus SQLAlchemy app (bench/bare_api.py) that selects the same
  job rows from the same table, under the same uvicorn setup.

Closed loop: `wrk -t2 -c<connections>` for `--seconds` against each, on `GET /v1/jobs/{id}` and
`GET /v1/jobs?limit=20`, each driven with the same load; prints requests/s and the ratio
(target: at least 0.9x). Open loop: `--pollers` clients that each send one request a second
(alternately that training job and the list) while a job trains on the same machine; p50 / p99
latency, each timed from when its request was due (a late answer delays the next), and
errors (target: p99 at most 30 ms, no errors). The pollers are keep-alive connections on raw
asyncio streams under uvloop, so the generator's own CPU weighs little on the shared cores.
Needs `wrk` (apt-get install wrk). Prints figures; asserts nothing. Client, servers and
database share this machine's cores."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import uvloop

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
    wait_ready,
)
from tests.support.data import digits, save_npz  # noqa: E402
from tests.support.teachers import digits_mlp_onnx  # noqa: E402

CLOSED_TARGET = 0.9
P99_TARGET_MS = 30.0
# High enough never to refuse, low enough to be real buckets that every request draws from.
RATE = {"DISTILLERY_RATE_LIMIT_PER_SECOND": "1000000", "DISTILLERY_RATE_LIMIT_BURST": "1000000"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_distillery(tmp: Path, database_url: str) -> Service:
    port = free_port()
    env = base_env(
        tmp / "data",
        DISTILLERY_DATABASE_URL=database_url,
        DISTILLERY_BROKER_URL=REDIS_URL,
        DISTILLERY_QUEUE_NAME=f"distillery-bench-{os.getpid()}",
        DISTILLERY_API_PORT=str(port),
        DISTILLERY_ANONYMOUS="false",
        # API and worker share this machine: the job leaves a core to the API (README,
        # "Sizing threads").
        DISTILLERY_JOB_THREADS="1",
        **RATE,
    )
    subprocess.run([sys.executable, "-m", "app.cli", "migrate"], env=env, cwd=ROOT, check=True)
    service = Service(name="distillery", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / "api.log", tmp / "worker.log"]
    service.processes = [spawn(["api"], env, service.logs[0])]
    wait_healthy(service)
    return service


def start_worker(service: Service, tmp: Path) -> None:
    service.logs.append(tmp / "worker.log")
    service.processes.append(spawn(["worker"], service.env, service.logs[-1]))
    wait_ready(service)


def start_bare(tmp: Path, database_url: str, tenant: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "TENANT": tenant}
    env["PYTHONPATH"] = str(ROOT)
    with (tmp / "bare.log").open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bare_api.py")],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/jobs?limit=1", timeout=2)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError((tmp / "bare.log").read_text())


def make_key(database_url: str) -> tuple[str, str]:
    """An API key (secret, tenant) made directly in the database, as `distillery` admins do."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from app.auth import create_key

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            key, secret = create_key(session, "bench", "bench")
            session.commit()
            return secret, key.tenant_id
    finally:
        engine.dispose()


def make_jobs(service: Service, folder: Path, count: int = 20) -> str:
    """`count` jobs of one tenant (one that ran and succeeded, so its row carries metrics; the
    rest cancelled while queued): the rows both apps read."""
    data = digits()
    teacher = digits_mlp_onnx(data.x_train, data.y_train, 10, folder / "teacher.onnx")
    train = save_npz(folder / "digits.npz", data.x_train, data.y_train)
    ids = {
        "teacher_id": service.upload_teacher(teacher).json()["id"],
        "train_dataset_id": service.upload_dataset(train).json()["id"],
    }
    first = service.client.post("/v1/jobs", json={**ids, "training": {"epochs": 3}}).json()
    done = service.wait(first["id"], timeout=600)
    assert done["status"] == "succeeded", done
    for _ in range(count - 1):
        job = service.client.post("/v1/jobs", json={**ids, "training": {"epochs": 3}}).json()
        service.client.post(f"/v1/jobs/{job['id']}/cancel")
    return str(first["id"])


def wrk(url: str, seconds: int, connections: int, key: str) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-H",
            f"Authorization: Bearer {key}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{url}: {bad.group(1)} responses were not 2xx:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found, out
    return float(found.group(1))


def closed_loop(
    distillery: str, bare: str, job_id: str, key: str, seconds: int, connections: int
) -> list[str]:
    lines = [
        f"**Closed loop**: wrk -t2 -c{connections}, {seconds} s each; API key and rate limits "
        "on (Distillery), nothing (baseline).",
        "",
        "| endpoint | Distillery req/s | bare FastAPI+SQLAlchemy req/s | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for path in (f"/v1/jobs/{job_id}", "/v1/jobs?limit=20"):
        wrk(distillery + path, 2, connections, key)  # warm both: pools, caches, JIT-free paths
        wrk(bare + path, 2, connections, key)
        ours = wrk(distillery + path, seconds, connections, key)
        base = wrk(bare + path, seconds, connections, key)
        ratio = ours / base
        met = "met" if ratio >= CLOSED_TARGET else "missed"
        shown = path.replace(job_id, "{id}")
        lines.append(
            f"| GET {shown} | {ours:.0f} | {base:.0f} | {ratio:.2f}x | ≥ {CLOSED_TARGET}x: {met} |"
        )
    return lines


class Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: a load generator as lean as
    this side of the machine can make it, so that the client's own CPU (it shares the two
    cores with the API, the database and the training job) weighs little in the latency."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        if length is None:
            raise RuntimeError(f"no content-length in {head!r}")
        await self.reader.readexactly(int(length.group(1)))
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _poller(
    connection: Connection, urls: list[str], start: float, seconds: float, found: list[float]
) -> Counter[str]:
    errors: Counter[str] = Counter()
    turn = 0
    while True:
        due = start + turn  # one request a second, on a fixed schedule (open loop)
        if due >= start + seconds:
            connection.close()
            return errors
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        # Timed from when it was due: a poller delayed by a slow answer counts the delay.
        try:
            status = await asyncio.wait_for(connection.get(urls[turn % len(urls)]), 30)
            if status != 200:
                errors[f"HTTP {status}"] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] += 1
            connection.close()
            connection.writer = None
        found.append(1000 * (time.monotonic() - due))
        turn += 1


async def open_loop(
    base_url: str, job_id: str, key: str, pollers: int, seconds: float
) -> tuple[list[float], Counter[str]]:
    urls = [f"/v1/jobs/{job_id}", "/v1/jobs?limit=20"]
    found: list[float] = []
    host, port = base_url.removeprefix("http://").split(":")
    start = time.monotonic() + 1.0
    # Spread the pollers over the second, as independent clients would be.
    runs = [
        _poller(Connection(host, int(port), key), urls, start + i / pollers, seconds, found)
        for i in range(pollers)
    ]
    counts = await asyncio.gather(*runs)
    return found, sum(counts, Counter())


def open_loop_table(service: Service, key: str, pollers: int, seconds: float) -> list[str]:
    """The open loop while a long job trains on the worker beside the API."""
    teacher = service.client.get("/v1/teachers", params={"limit": 1}).json()["data"][0]["id"]
    dataset = service.client.get("/v1/datasets", params={"limit": 1}).json()["data"][0]["id"]
    body = {"teacher_id": teacher, "train_dataset_id": dataset, "training": {"epochs": 1000}}
    job = service.client.post("/v1/jobs", json=body).json()
    while service.client.get(f"/v1/jobs/{job['id']}").json().get("stage") != "training":
        time.sleep(0.3)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            ms, errors = runner.run(open_loop(service.base_url, job["id"], key, pollers, seconds))
    finally:
        service.client.post(f"/v1/jobs/{job['id']}/cancel")
    ms.sort()
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    met = "met" if p99 <= P99_TARGET_MS and not errors else "missed"
    return [
        f"**Open loop**: {pollers} pollers at 1 request/s each for {seconds:.0f} s while a job "
        "trains on the worker beside the API.",
        "",
        "| requests | errors | p50 ms | p99 ms | max ms | target |",
        "|---|---|---|---|---|---|",
        f"| {len(ms)} | {sum(errors.values())} {dict(errors) or ''} | {ms[len(ms) // 2]:.1f} "
        f"| {p99:.1f} | {ms[-1]:.1f} | p99 ≤ {P99_TARGET_MS:.0f} ms, no errors: {met} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--open-seconds", type=float, default=20.0)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/api.py needs wrk: apt-get install wrk")
    database = create_database()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        tmp = Path(folder)
        service = start_distillery(tmp, database.url)
        bare: subprocess.Popen[bytes] | None = None
        try:
            key, tenant = make_key(database.url)
            service.client.headers["Authorization"] = f"Bearer {key}"
            start_worker(service, tmp)
            log("making the job rows")
            job_id = make_jobs(service, tmp)
            bare, bare_url = start_bare(tmp, database.url, tenant)
            log("closed loop")
            lines = closed_loop(
                service.base_url, bare_url, job_id, key, args.seconds, args.connections
            )
            print("\n".join(lines) + "\n", flush=True)
            log("open loop")
            lines = open_loop_table(service, key, args.pollers, args.open_seconds)
            print("\n".join(lines) + "\n", flush=True)
        finally:
            if bare is not None:
                bare.terminate()
                bare.wait(10)
            service.stop()
            drop_database(database)


if __name__ == "__main__":
    main()
