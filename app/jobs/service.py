"""Jobs as the API sees them: submit one (checked, stored with its spec and its message in one
transaction), and the public view of a stored job."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.finite_json import finite_or_null
from app.jobs import state
from app.jobs.spec import JobCreate, JobSpec
from app.jobs.validation import validate_submission
from app.models import Job, new_id
from app.outbox import enqueue
from app.settings import Settings


def create_job(
    session: Session, body: JobCreate, tenant: str, settings: Settings, job_id: str | None = None
) -> Job:
    """Check and insert the job, with its message in the outbox of the same transaction."""
    spec = body.to_spec()
    validate_submission(session, spec, tenant, settings)
    job = Job(
        id=job_id or new_id("job"),
        tenant_id=tenant,
        time_limit_seconds=spec.training.time_limit_seconds or settings.job_time_limit_seconds,
        spec=spec.model_dump(mode="json"),
        cancel_requested=False,
    )
    state.submitted(session, job)
    enqueue(session, job.id)
    return job


def job_spec(job: Job) -> JobSpec:
    return JobSpec.model_validate(job.spec)


def job_public(job: Job) -> dict[str, Any]:
    """The job as GET /v1/jobs/{id} shows it (validated against JobPublic on the way out)."""
    return {**job_public_fields(job), "metrics": finite_or_null(job.metrics)}


def job_public_fields(job: Job) -> dict[str, Any]:
    """job_public but its metrics: all of it but the one document that grows as it trains."""
    spec = job_spec(job)
    teachers = spec.teachers
    return {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "epoch": job.epoch,
        "epochs": spec.training.epochs,
        "metrics": None,
        "error": (
            {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None
        ),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "worker": job.worker,
        "time_limit_seconds": job.time_limit_seconds,
        "teacher_id": teachers.ids[0],
        "teacher_ids": teachers.ids if teachers.kind == "ensemble" else teachers.ids[:1],
        "teacher_checkpoint_ids": teachers.ids if teachers.kind == "checkpoints" else [],
        "train_dataset_id": spec.train_dataset_id,
        "validation_dataset_id": spec.validation_dataset_id,
        "test_dataset_id": spec.test_dataset_id,
        "student": spec.student,
        "method": spec.method,
        "training": spec.training,
        "split": job.split,
        "transfer_dataset_ids": spec.transfer_dataset_ids,
        "transfer": spec.transfer,
        "baseline": spec.baseline,
        "assistants": spec.assistants,
        "cross_domain": spec.cross_domain,
        "search": spec.search,
        "quantize": spec.quantize,
        "resources": spec.resources,
    }
