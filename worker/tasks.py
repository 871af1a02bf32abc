"""Celery tasks: thin. They take ids and delegate; the logic lives in worker.runner."""

from __future__ import annotations

from app.queue import RUN_JOB_TASK
from worker.celery_app import celery


@celery.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    # Imported here so the worker's parent process never loads torch (or touches CUDA).
    from app.observability import adopt_library_logging
    from worker.runner import run_job as run

    adopt_library_logging("torch")
    run(job_id)
