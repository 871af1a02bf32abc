"""A job as a pipeline of named stages (run.py): inputs, teacher, plan, train, evaluate,
export, deliver. The Celery task calls `run_job(job_id)`."""

from worker.pipeline.run import ClaimFailed, run_job

__all__ = ["ClaimFailed", "run_job"]
