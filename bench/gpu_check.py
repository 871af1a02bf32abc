"""The GPU path, run: a GPU worker's job and its teacher's labelling (bench/gpu_check.sh).

    .venv/bin/python bench/gpu_check.py --device cuda|cpu [--rows 50000]

Starts `distillery api` and `distillery worker --gpu` on the embedded database and broker (a
temporary folder: no Postgres or Redis needed), uploads a digits CNN teacher trained here and
the digits, and submits a job with "resources": {"gpu": true} and a 50,000-row mixup transfer
set: the job's teacher labels those rows in its confined process, the student trains on
them. Prints the job's device, the student's epoch time and the teacher's labelling speed as
the job saw it; then labels `--rows` rows through the confined teacher on the CPU (and on the
GPU with --device cuda), against the same model in onnxruntime in-process (bench/teacher.py).
Exits 1 when the job fails, or runs anywhere but on `--device`."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from teacher import image_teacher, measure, show  # noqa: E402

from app.settings import Settings  # noqa: E402
from tests.support import Service, base_env, free_port, spawn, wait_healthy  # noqa: E402
from tests.support.data import digits, save_npz  # noqa: E402
from tests.support.teachers import save_onnx, train  # noqa: E402
from worker.sandbox import SandboxLimits  # noqa: E402

JOB: dict[str, Any] = {
    "training": {"epochs": 3},
    "transfer": {"synthesize": ["mixup"], "size": 50_000},
    "quantize": False,
    "baseline": False,
    "resources": {"gpu": True},
}


def say(message: str) -> None:
    print(message, flush=True)


def start_stack(folder: Path) -> Service:
    """The API and one GPU worker (job and inspection pools) on the embedded stack."""
    port = free_port()
    env = base_env(folder / "data", DISTILLERY_API_PORT=str(port))
    command = [sys.executable, "-m", "app.cli", "migrate"]
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
    service = Service(name="gpu-check", base_url=f"http://127.0.0.1:{port}", env=env)
    service.logs = [folder / "api.log", folder / "worker.log"]
    service.processes = [
        spawn(["api"], env, service.logs[0]),
        spawn(["worker", "--gpu"], env, service.logs[1]),
    ]
    wait_healthy(service)
    return service


def upload_inputs(service: Service, folder: Path) -> dict[str, str]:
    data = digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 8 * 8, 10),
    )
    train(model, data.x_train, data.y_train, epochs=8)
    teacher = service.upload_teacher(save_onnx(model, torch.zeros(2, 1, 8, 8), folder / "t.onnx"))
    dataset = service.upload_dataset(save_npz(folder / "digits.npz", data.x_train, data.y_train))
    if teacher.status_code != 201 or dataset.status_code != 201:
        raise RuntimeError(f"uploads refused: {teacher.text} {dataset.text}\n{service.tail()}")
    return {"teacher_id": teacher.json()["id"], "train_dataset_id": dataset.json()["id"]}


def submit(service: Service, ids: dict[str, str]) -> str:
    """The GPU job, once the API has seen the GPU worker alive (a 422 until then)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = service.client.post("/v1/jobs", json={**ids, **JOB})
        if r.status_code == 201:
            return str(r.json()["id"])
        if r.json().get("code") != "gpu_unavailable":
            raise RuntimeError(f"job refused: {r.text}")
        time.sleep(0.5)
    raise RuntimeError(f"the GPU worker was not seen within 120 s:\n{service.tail()}")


def report_job(job: dict[str, Any], device: str) -> bool:
    if job["status"] != "succeeded":
        say(f"the job {job['status']}: {job.get('error')}")
        return False
    metrics = job["metrics"]
    runtime = metrics["teacher"]["runtime"]
    epochs = [epoch["seconds"] for epoch in metrics["history"]]
    speed = runtime["rows_per_second"] or 0.0
    say(
        f"job {job['id']}: student on {metrics['device']}, {len(epochs)} epochs of "
        f"{metrics['transfer']['labeled_rows'] + metrics['transfer']['transfer_rows']:,} rows, "
        f"median epoch {statistics.median(epochs):.2f} s (first {epochs[0]:.2f} s); "
        f"accuracy {metrics['student_accuracy']:.3f} (teacher {metrics['teacher_accuracy']:.3f})"
    )
    say(
        f"its teacher: on {runtime['device']}, {runtime['threads']} thread(s), batches of "
        f"{runtime['batch_rows']}, labelled {runtime['labelled_rows']:,} rows at "
        f"{speed:,.0f} rows/s (pipes included)"
    )
    return metrics["device"].startswith(device) and runtime["device"] == device


def labelling(device: str, rows: int) -> bool:
    """The confined teacher against onnxruntime in-process, on the CPU and on the GPU."""
    settings = Settings(broker_url="redis://bench")
    figures = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        teacher = image_teacher("cnn", Path(folder), rows)
        for on in ["cpu", "cuda"] if device == "cuda" else ["cpu"]:
            limits = SandboxLimits(
                settings.teacher_memory_bytes,
                settings.teacher_cpu_seconds,
                threads=settings.resolved_job_threads,
                device="cuda" if on == "cuda" else "cpu",
            )
            figures.append(measure(teacher, limits, passes=1))
    show(rows, figures)
    if device == "cuda" and len(figures) == 2:
        say(f"teacher on the GPU: {figures[1].confined / figures[0].confined:.1f}x its CPU speed")
    return figures[-1].device == device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], required=True)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        folder = Path(scratch)
        service = start_stack(folder)
        try:
            ids = upload_inputs(service, folder)
            job = service.wait(submit(service, ids), timeout=240)
            job_ok = report_job(job, args.device)
        finally:
            service.stop()
    labelled_ok = labelling(args.device, args.rows)
    took = time.monotonic() - started
    if not (job_ok and labelled_ok):
        say(f"FAILED: the path did not run on {args.device} ({took:.0f} s)")
        return 1
    say(f"the {args.device} path works ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
