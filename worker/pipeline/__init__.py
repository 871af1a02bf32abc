"""A job as a pipeline of named stages (run.py): inputs, teacher, plan, train, evaluate,
export, deliver. The Celery task claims the job (worker/claim.py)
and calls `run_claimed(lease)`."""

from worker.pipeline.run import run_claimed

__all__ = ["run_claimed"]
