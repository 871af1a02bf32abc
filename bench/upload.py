"""Memory of the API process while it receives a 1 GiB dataset upload.

    .venv/bin/python bench/upload.py [--gib 1] [--stack embedded|postgres] [--over-limit]

Writes a valid NPZ of the given size to a temp folder (x float32 (N, 1024), y int64), starts
the API as a subprocess (embedded SQLite by default, or a fresh Postgres database), uploads
the file as a chunked multipart body (no Content-Length: the server must count it), samples
the API process's resident memory every 20 ms and prints the peak growth over its idle
baseline. The issue's target is < 100 MB. `--over-limit` also sends the same body to an API
whose limit is half its size and measures the 413 path. Prints figures; asserts nothing."""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
from numpy.lib import format as npy_format

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    Service,
    base_env,
    create_database,
    drop_database,
    free_port,
    spawn,
    wait_healthy,
)

FEATURES = 1024
CHUNK = 1024 * 1024


def write_npz(path: Path, total_bytes: int) -> int:
    """An uncompressed NPZ whose x is about `total_bytes`, written a few MB at a time."""
    rows = total_bytes // (FEATURES * 4)
    rng = np.random.default_rng(0)
    step = 2048
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f4", "fortran_order": False, "shape": (rows, FEATURES)}
            npy_format.write_array_header_1_0(member, header)
            for start in range(0, rows, step):
                n = min(step, rows - start)
                member.write(rng.random((n, FEATURES), dtype=np.float32).tobytes())
        with archive.open("y.npy", "w", force_zip64=True) as member:
            npy_format.write_array(member, np.arange(rows, dtype=np.int64) % 10)
    return rows


def multipart(path: Path, boundary: str) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.npz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


class RssSampler:
    """Peak resident memory of a process (and its children), sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return int(total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def start_api(tmp: Path, database_url: str | None, max_bytes: int) -> Service:
    port = free_port()
    extra = {
        "DISTILLERY_API_PORT": str(port),
        "DISTILLERY_MAX_UPLOAD_BYTES": str(max_bytes),
        "DISTILLERY_RATE_LIMIT_PER_SECOND": "0",
    }
    if database_url:
        extra["DISTILLERY_DATABASE_URL"] = database_url
    env = base_env(tmp / "data", **extra)
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    service = Service(name="bench-api", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [tmp / f"api-{port}.log"]
    service.processes = [spawn(["api"], env, service.logs[0])]
    wait_healthy(service)
    return service


def measure(service: Service, path: Path, label: str) -> None:
    pid = service.processes[0].pid
    for _ in range(5):
        service.client.get("/v1/datasets")  # warm the routes before the baseline
    sampler = RssSampler(pid)
    baseline = sampler.rss()
    boundary = secrets.token_hex(16)
    started = time.perf_counter()
    with sampler, httpx.Client(base_url=service.base_url, timeout=1800) as client:
        response = client.post(
            "/v1/datasets",
            content=multipart(path, boundary),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    body = response.json()
    outcome = f"rows={body['rows']}" if response.status_code == 201 else body.get("code")
    print(
        f"{label}: HTTP {response.status_code} ({outcome}) for {size / 2**30:.2f} GiB "
        f"chunked in {seconds:.1f} s ({size / 2**20 / seconds:.0f} MB/s)"
    )
    print(
        f"{label}: API RSS baseline {baseline / 2**20:.0f} MB, peak {sampler.peak / 2**20:.0f} "
        f"MB, peak growth {(sampler.peak - baseline) / 2**20:.1f} MB (target < 100 MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the upload in GiB")
    parser.add_argument("--stack", choices=["embedded", "postgres"], default="embedded")
    parser.add_argument("--over-limit", action="store_true", help="also measure the 413 path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as folder:
        tmp = Path(folder)
        path = tmp / "big.npz"
        started = time.perf_counter()
        rows = write_npz(path, int(args.gib * 2**30))
        print(
            f"wrote {path.stat().st_size / 2**30:.2f} GiB NPZ ({rows} x {FEATURES} float32) "
            f"in {time.perf_counter() - started:.1f} s; stack: {args.stack}"
        )
        db = create_database() if args.stack == "postgres" else None
        try:
            service = start_api(tmp / "ok", db.url if db else None, 2 * path.stat().st_size)
            try:
                measure(service, path, "accepted")
            finally:
                service.stop()
            if args.over_limit:
                service = start_api(tmp / "over", db.url if db else None, path.stat().st_size // 2)
                try:
                    measure(service, path, "over the limit")
                finally:
                    service.stop()
        finally:
            if db is not None:
                drop_database(db)
    os.sync()


if __name__ == "__main__":
    main()
