"""Warming a job pool's child while it waits for its first job.

Jobs run in pool children (app/queue.py: up to jobs_per_child each, then a fresh one).
Without warming, a child's first job would pay, on the clock its user watches, for importing
torch, onnx and onnxruntime, and for the one-off costs of their first calls (the first
backward pass and optimizer step, the first ONNX export, the first inference session):
seconds, most of a small job's wait. The child runs this as it starts (worker_process_init),
before it takes a job: the pool hands a child its first message only once it has started
(app/queue.py allows WARM_UP_SECONDS for that). That is while the worker is idle; a job that
arrives during it waits in the queue for the rest. One thread does it, so imports never race.

Tiny models only, on random numbers: nothing here touches a job, a database or a file but a
temporary one."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _train_steps(model: object, x: object, classes: int) -> None:
    import torch
    import torch.nn.functional as F

    assert isinstance(model, torch.nn.Module) and isinstance(x, torch.Tensor)
    teacher = torch.randn(len(x), classes)
    labels = torch.randint(0, classes, (len(x),))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        logits = model(x)
        soft = F.kl_div(
            F.log_softmax(logits / 4, dim=1), F.softmax(teacher / 4, dim=1), reduction="batchmean"
        )
        torch.autograd.backward(soft + F.cross_entropy(logits, labels))
        optimizer.step()
    model.eval()
    with torch.no_grad():
        model(x[:1])


def warm_up() -> float:
    """Import the engine and make each of its runtimes' first calls once; the seconds taken."""
    started = time.perf_counter()
    import numpy as np
    import torch

    import worker.pipeline  # noqa: F401  (the engine, torch, onnx)
    from worker.engine.config import StudentSpec
    from worker.engine.export import export_onnx
    from worker.engine.students import build_student

    torch.manual_seed(0)
    shapes = [(64,), (1, 8, 8), (1, 40)]
    with tempfile.TemporaryDirectory(prefix="distillery-warmup-") as folder:
        for number, shape in enumerate(shapes):
            for architecture in ("mlp", "cnn") if len(shape) > 1 else ("mlp",):
                spec = StudentSpec(architecture, (16, 16), 0.1, True, (8, 8), True)
                model = build_student(spec, shape, 3)
                x = torch.randn(16, *shape)
                _train_steps(model, x, 3)
                path = Path(folder) / f"warm-{number}-{architecture}.onnx"
                export_onnx(model, shape, path, np.asarray(x.numpy()))
    return time.perf_counter() - started


def size_threads() -> int:
    """The job's torch threads (DISTILLERY_JOB_THREADS): set before its first torch op, so a
    job never takes the core the embedded API serves on."""
    import torch

    from app.settings import get_settings

    threads = get_settings().resolved_job_threads
    torch.set_num_threads(threads)
    return threads


def warm_up_child(gpu_queue: bool = False) -> None:
    """Called in the pool child as it starts (worker_process_init), before it takes a job:
    a job never waits for imports it could have had, and nothing imports in two threads.
    A child of a GPU worker (`distillery worker --gpu`) says whether it sees a GPU."""
    try:
        size_threads()
        seconds = warm_up()
        from app.observability import adopt_library_logging

        adopt_library_logging("torch")
        log.info("warmed up for jobs in %.2f s", seconds)
        if gpu_queue:
            say_device()
    except Exception:  # a job still runs without it, only slower to start
        log.exception("warm-up failed; jobs will pay for it themselves")


def say_device() -> None:
    import torch

    if torch.cuda.is_available():
        log.info("serving the GPU queue on %s", torch.cuda.get_device_name(0))
    else:
        log.warning(
            "serving the GPU queue but torch sees no CUDA device: its jobs will run on the CPU"
        )


def release_job_memory() -> None:
    """After a job: what it allocated goes back before the child waits for the next one (the
    pool replaces a child that still holds more than job_child_max_memory_mb)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


WARM_UP_SECONDS = 120.0  # how long a pool child may take to start, its warm-up included
