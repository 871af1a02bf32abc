"""Running one job: claim its lease, run its stages in order, and end it in one state.

    inputs -> teacher -> plan -> train -> evaluate -> export -> deliver

Each stage is a function with typed inputs and outputs (this package's modules). A job ends
succeeded (deliver), cancelled (a cancel seen at a step or a stage), failed with the code of
the JobFailure that stopped it (or out_of_memory / internal_error for anything else), or not
at all when its lease was lost: then another worker owns it and this one writes nothing."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from app.db import session_scope
from app.jobs.spec import JobSpec
from app.jobs.state import JobStatus, fail, move
from app.models import Job
from app.settings import Settings, get_settings
from worker.engine import JobFailure, OutOfMemory, RunHooks, run_hooks
from worker.engine.errors import is_memory_error, memory_summary
from worker.lease import DatabaseCheckpoints, Heartbeat, JobCancelled, Lease, LeaseLost
from worker.pipeline.context import JobRun
from worker.pipeline.deliver import deliver, job_metrics
from worker.pipeline.evaluate import evaluate
from worker.pipeline.export import export
from worker.pipeline.inputs import inputs
from worker.pipeline.plan import plan
from worker.pipeline.teacher import teachers
from worker.pipeline.train import train

log = logging.getLogger(__name__)


def run_stages(run: JobRun) -> None:
    found_inputs = inputs(run)
    found_teachers = teachers(run, found_inputs)
    planned = plan(run, found_inputs, found_teachers)
    result = train(run, planned, found_teachers)
    scores = evaluate(run, planned, found_teachers, result)
    exported = export(run, planned, result)
    metrics = job_metrics(run, found_inputs, planned, result, scores, exported)
    deliver(run, metrics, exported, epochs=len(result.outcome.history))


def as_failure(exc: Exception) -> JobFailure:
    """What an unexpected error means for the job's error.code."""
    if isinstance(exc, JobFailure):
        return exc
    if is_memory_error(exc):  # MemoryError, or torch's or onnxruntime's failed allocation
        return OutOfMemory(
            f"the job ran out of memory on its worker ({memory_summary(exc)}); use a smaller "
            "student, training.batch_size or transfer set. Jobs are refused at submission "
            "above DISTILLERY_MAX_JOB_MEMORY_BYTES: set it to what a worker has"
        )
    return JobFailure(f"{type(exc).__name__}: {exc}")


def _finish(lease: Lease, to: JobStatus, failure: JobFailure | None = None) -> None:
    def write(session: Session) -> None:
        if failure is not None:
            fail(session, lease.job_id, failure.code, str(failure), token=lease.token)
        else:
            move(session, lease.job_id, to, "cancelled", token=lease.token)

    try:
        lease.write(write, f"ending the job ({to})")
    except LeaseLost:
        log.info("job was taken over before it could end %s; leaving it", to)


def _spec(job_id: str) -> JobSpec:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return JobSpec.model_validate(job.spec)


@contextmanager
def _attempt(lease: Lease, settings: Settings, heartbeat: Heartbeat) -> Iterator[JobRun]:
    """The job's scratch folder and training hooks, for one attempt (its heartbeat runs from
    the claim)."""
    workdir = settings.tmp_dir / f"{lease.job_id}-{lease.token}"
    try:
        run = JobRun(lease=lease, settings=settings, spec=_spec(lease.job_id), workdir=workdir)
        hooks = RunHooks(
            on_step=heartbeat.check,
            checkpoints=DatabaseCheckpoints(lease),
            on_resume=lambda name, epoch: run.event(
                "message",
                f"resumed {name} from its checkpoint after epoch {epoch}",
                {"run": name, "epoch": epoch},
            ),
        )
        with run_hooks(hooks):
            yield run
    finally:
        heartbeat.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def run_claimed(lease: Lease, heartbeat: Heartbeat) -> None:
    """Run a job this worker has claimed (worker/claim.py), to one end state. `heartbeat` has
    renewed the lease since the claim; it is stopped here."""
    settings = get_settings()
    settings.ensure_dirs()
    log.info("job claimed by %s (lease %d)", lease.owner, lease.token)
    try:
        with _attempt(lease, settings, heartbeat) as run:
            run_stages(run)
        log.info("job succeeded")
    except LeaseLost as exc:
        log.warning("stopping without writing: %s", exc)
    except JobCancelled:
        _finish(lease, JobStatus.CANCELLED)
    except Exception as exc:
        failure = as_failure(exc)
        if failure is not exc or failure.code == "internal_error":
            log.exception("job %s failed", lease.job_id)
        log.warning("job failed: %s: %s", failure.code, failure)
        _finish(lease, JobStatus.FAILED, failure)
