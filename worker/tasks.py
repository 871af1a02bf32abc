"""Celery tasks: thin. They take ids and delegate; the logic lives in worker.pipeline (jobs)
and worker.inspection (uploaded teachers)."""

from __future__ import annotations

import logging
from typing import Any

from app.observability import adopt_library_logging, job_context
from app.queue import INSPECT_TEACHER_TASK, RUN_JOB_TASK
from worker.celery_app import celery
from worker.claim import ClaimFailed, claim, start_heartbeat
from worker.warmup import release_job_memory, size_threads

log = logging.getLogger(__name__)

# A worker that cannot reach the database to claim its job sends the task again this much
# later, for about five minutes; past that, the relay's republish takes over.
CLAIM_RETRY_SECONDS = 5
CLAIM_RETRIES = 60


def _run_job(self: Any, job_id: str) -> None:
    with job_context(job_id):
        # Claimed first, torch-free: the job is running the moment its message arrives.
        try:
            lease = claim(job_id)
        except ClaimFailed as exc:
            log.warning("%s; trying again in %d s", exc, CLAIM_RETRY_SECONDS)
            raise self.retry(
                exc=exc, countdown=CLAIM_RETRY_SECONDS, max_retries=CLAIM_RETRIES
            ) from exc
        if lease is None:
            log.info("job %s is not queued any more; leaving it", job_id)
            return
        # Imported here so the worker's parent process never loads torch (or touches CUDA);
        # the child's warm-up (worker/warmup.py) has imported it already.
        heartbeat = start_heartbeat(lease)
        try:
            size_threads()
            from worker.pipeline import run_claimed
        except BaseException:
            heartbeat.stop()  # the relay requeues the job once the lease expires
            raise
        adopt_library_logging("torch")
        try:
            run_claimed(lease, heartbeat)
        finally:
            release_job_memory()


def _inspect_teacher(teacher_id: str) -> None:
    # The model runs in a confined subprocess; this process imports neither torch nor
    # onnxruntime, so the inspection pool starts and answers fast.
    from worker.inspection import inspect_teacher as inspect

    inspect(teacher_id)


# Registered by call, not as decorators: Celery's task decorator is untyped.
run_job = celery.task(name=RUN_JOB_TASK, bind=True)(_run_job)
inspect_teacher = celery.task(name=INSPECT_TEACHER_TASK)(_inspect_teacher)
