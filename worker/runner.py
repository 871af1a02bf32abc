"""Running one job: claim the row, fetch blobs, call the engine, store artifacts, finish."""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app import finite_json
from app.db import session_scope
from app.events import EventType, record_event
from app.jobs import fail_job
from app.models import Artifact, Blob, Dataset, Job, TrainingCheckpoint, utcnow
from app.models import Teacher as TeacherRow
from app.observability import job_context
from app.settings import Settings, get_settings
from app.storage import cached_blob, store_file
from worker.engine import (
    AssistantStep,
    DiskLogitCache,
    EnsembleTeacher,
    EpochRecord,
    ExportCheckFailed,
    RunHooks,
    Teacher,
    TeacherRejected,
    accuracy,
    distill,
    distill_best_checkpoint,
    distill_through_assistants,
    export_onnx,
    run_hooks,
    save_safetensors,
)
from worker.engine.finite import NotFinite
from worker.lease import (
    DatabaseCheckpoints,
    Heartbeat,
    JobCancelled,
    Lease,
    LeaseLost,
    TimeLimitExceeded,
)
from worker.plan import (
    JobInputError,
    assistant_plan,
    build_splits,
    cross_domain_report,
    cross_domain_teachers,
    distill_config,
    measure_latency,
    student_plan,
    transfer_rows,
)
from worker.report import render_report
from worker.sandbox import SandboxedTeacher, SandboxError, SandboxLimits
from worker.teacher_process import is_memory_error, memory_summary

log = logging.getLogger(__name__)


class ClaimFailed(Exception):
    """The database could not be reached to claim the job (after the claim's own retries):
    nothing was written, and the task may simply try again later."""


ARTIFACT_TYPES = {
    "student.onnx": "application/octet-stream",
    "student.safetensors": "application/octet-stream",
    "metrics.json": "application/json",
    "report.html": "text/html",
}


def run_job(job_id: str) -> None:
    with job_context(job_id):
        _run(job_id)


def _run(job_id: str) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    try:
        lease = Lease.claim(job_id)
    except DBAPIError as exc:
        raise ClaimFailed(f"could not claim {job_id}: {type(exc.orig).__name__}") from exc
    if lease is None:
        # A duplicate delivery, or a job that is running elsewhere, finished or cancelled.
        log.info("job %s is not queued any more; leaving it", job_id)
        return
    log.info("job claimed by %s (lease %d)", lease.owner, lease.token)
    heartbeat = Heartbeat(lease, settings)
    heartbeat.start()
    workdir = settings.tmp_dir / f"{job_id}-{lease.token}"
    hooks = RunHooks(
        on_step=heartbeat.check,
        checkpoints=DatabaseCheckpoints(lease),
        on_resume=lambda run, epoch: _event(
            lease,
            "message",
            f"resumed {run} from its checkpoint after epoch {epoch}",
            {"run": run, "epoch": epoch},
        ),
    )
    try:
        _event(
            lease,
            "state",
            f"running on {lease.owner} (attempt {lease.attempt})",
            {
                "status": "running",
                "worker": lease.owner,
                "attempt": lease.attempt,
                "lease": lease.token,
            },
        )
        with run_hooks(hooks):
            _execute(lease, settings, workdir)
    except LeaseLost as exc:
        # Someone else runs the job now: write nothing (nothing would land anyway).
        log.warning("stopping without writing: %s", exc)
    except JobCancelled:
        _finish_cancelled(lease)
    except TimeLimitExceeded:
        _fail(
            lease,
            "time_limit_exceeded",
            "the job ran past its time limit; "
            "ask for fewer epochs or a larger training.time_limit_seconds",
        )
    except JobInputError as exc:
        _fail(lease, exc.code, str(exc))
    except SandboxError as exc:
        _fail(lease, exc.code, str(exc))
    except TeacherRejected as exc:
        _fail(lease, "teacher_invalid", str(exc))
    except ExportCheckFailed as exc:
        _fail(lease, "export_check_failed", str(exc))
    except NotFinite as exc:
        _fail(lease, exc.code, str(exc))
    except Exception as exc:
        if is_memory_error(exc):  # MemoryError, or torch's or onnxruntime's failed allocation
            log.warning("job %s ran out of memory: %s", job_id, memory_summary(exc))
            _fail(
                lease,
                "out_of_memory",
                f"the job ran out of memory on its worker ({memory_summary(exc)}); use a "
                "smaller student, training.batch_size or transfer set. Jobs are refused at "
                "submission above DISTILLERY_MAX_JOB_MEMORY_BYTES: set it to what a worker has",
            )
        else:
            log.exception("job %s failed", job_id)
            _fail(lease, "internal_error", f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _event(lease: Lease, type: EventType, message: str, data: dict[str, Any] | None = None) -> None:
    lease.write(lambda session: record_event(session, lease.job_id, type, message, data), "event")


def _set_state(lease: Lease, **values: Any) -> None:
    lease.write(
        lambda session: session.execute(update(Job).where(Job.id == lease.job_id).values(**values)),
        "updating the job",
    )


def _finish_cancelled(lease: Lease) -> None:
    def cancel(session: Session) -> None:
        session.execute(
            update(Job)
            .where(Job.id == lease.job_id)
            .values(status="cancelled", stage="cancelled", finished_at=utcnow())
        )
        record_event(session, lease.job_id, "state", "cancelled", {"status": "cancelled"})

    try:
        lease.write(cancel, "cancelling")
    except LeaseLost:
        log.info("cancelled job was taken over; leaving it")


def _fail(lease: Lease, code: str, message: str) -> None:
    log.warning("job failed: %s: %s", code, message)

    def fail(session: Session) -> None:
        fail_job(session, lease.job_id, code, message)

    try:
        lease.write(fail, "failing the job")
    except LeaseLost:
        log.info("failed job was taken over; leaving it")


def _stage(lease: Lease, stage: str) -> None:
    def set_stage(session: Session) -> None:
        job = session.get(Job, lease.job_id)
        if job is None or job.cancel_requested:
            raise JobCancelled()
        job.stage = stage
        record_event(session, lease.job_id, "message", f"stage: {stage}", {"stage": stage})

    lease.write(set_stage, "setting the stage")


def _fetch(settings: Settings, job_id: str) -> dict[str, Any]:
    """Local paths of the teacher and datasets, from the worker's cache by sha256."""
    cache = settings.resolved_cache_dir
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        found: dict[str, Any] = {"spec": dict(job.spec), "teachers": []}
        named = job.spec.get("teacher_checkpoint_ids") or job.spec.get("teacher_ids")
        for teacher_id in named or [job.teacher_id]:
            teacher = session.get(TeacherRow, teacher_id)
            if teacher is None:
                raise JobInputError("unknown_id", f"teacher {teacher_id} is gone")
            found["teachers"].append(
                (
                    cached_blob(_blob(session, teacher.blob_id), cache),
                    {
                        "id": teacher.id,
                        "output_name": teacher.output_name,
                        "output_kind": teacher.output_kind,
                    },
                )
            )
        for role, dataset_id in (
            ("train", job.train_dataset_id),
            ("validation", job.validation_dataset_id),
            ("test", job.test_dataset_id),
        ):
            dataset = session.get(Dataset, dataset_id) if dataset_id else None
            found[role] = cached_blob(_blob(session, dataset.blob_id), cache) if dataset else None
        found["transfer_paths"] = []
        for dataset_id in job.spec.get("transfer_dataset_ids", []):
            dataset = session.get(Dataset, dataset_id)
            if dataset is None:
                raise JobInputError("unknown_id", f"transfer dataset {dataset_id} is gone")
            found["transfer_paths"].append(
                (dataset_id, cached_blob(_blob(session, dataset.blob_id), cache))
            )
        # Cross-domain: an uploaded ONNX mapping, or the VAE's source and target datasets.
        cross = job.spec.get("cross_domain") or {}
        found["cross_domain_paths"] = {}
        blob_ids: dict[str, str | None] = {}
        if cross.get("mapping_id"):
            mapping = session.get(TeacherRow, cross["mapping_id"])
            blob_ids["mapping"] = mapping.blob_id if mapping else None
        for role in ("source", "target"):
            if cross.get(f"{role}_dataset_id"):
                dataset = session.get(Dataset, cross[f"{role}_dataset_id"])
                blob_ids[role] = dataset.blob_id if dataset else None
        for role, blob_id in blob_ids.items():
            if blob_id is None:
                raise JobInputError("unknown_id", f"the cross_domain {role} is gone")
            found["cross_domain_paths"][role] = cached_blob(_blob(session, blob_id), cache)
        return found


def _blob(session: Any, blob_id: str) -> Blob:
    blob = session.get(Blob, blob_id)
    if blob is None:
        raise JobInputError("blob_missing", f"stored bytes {blob_id} are missing")
    return blob


def _execute(lease: Lease, settings: Settings, workdir: Path) -> None:
    job_id = lease.job_id
    found = _fetch(settings, job_id)
    spec = found["spec"]
    _stage(lease, "loading")
    limits = SandboxLimits.from_settings(settings)
    members: list[Teacher] = [SandboxedTeacher(path, limits) for path, _ in found["teachers"]]
    checkpoints = bool(spec.get("teacher_checkpoint_ids"))
    teacher: Teacher = (
        members[0]
        if len(members) == 1 or checkpoints
        else EnsembleTeacher(members, float(spec["method"]["temperature"]))
    )
    splits, split_report = build_splits(
        found["train"], found["validation"], found["test"], int(spec["training"]["seed"])
    )
    _set_state(lease, split=split_report)
    if len(splits.test.x) == 0 or len(splits.validation.x) == 0:
        raise JobInputError("split_empty", "the held-out split is empty; upload more rows")
    teacher, members, mapping = cross_domain_teachers(
        spec, teacher, members, splits, found["cross_domain_paths"], lambda s: _stage(lease, s)
    )
    transfer = spec.get("transfer")
    if found["transfer_paths"] or transfer:
        _stage(lease, "transfer_set")
        made = transfer_rows(found["transfer_paths"], transfer, splits, mapping)
        splits = replace(splits, transfer=made)

    history: list[dict[str, Any]] = []
    scratch: list[dict[str, Any]] = []

    def progress() -> dict[str, Any]:
        latest = {"latest": history[-1]} if history else {}
        if scratch:
            latest["latest_scratch"] = scratch[-1]
        return {**latest, "history": history, "history_scratch": scratch}

    def on_epoch(record: EpochRecord) -> None:
        if record.epoch == 1:  # a new run (assistant step, checkpoint) starts its own curve
            history.clear()
        history.append(asdict(record))
        _set_state(lease, epoch=record.epoch, metrics=progress())
        _event(lease, "metrics", f"epoch {record.epoch}", {"phase": "student", **asdict(record)})

    def on_baseline_epoch(record: EpochRecord) -> None:
        scratch.append(asdict(record))
        _set_state(lease, metrics=progress())
        _event(
            lease,
            "metrics",
            f"scratch epoch {record.epoch}",
            {"phase": "scratch", **asdict(record)},
        )

    logit_cache = DiskLogitCache(settings.resolved_cache_dir / "teacher_outputs")
    student, sizing = student_plan(spec, teacher)
    config = distill_config(spec, student)
    steps: list[AssistantStep] = []
    if checkpoints:
        outcome, _ = distill_best_checkpoint(
            config,
            members,
            splits,
            on_stage=lambda stage: _stage(lease, stage),
            on_epoch=on_epoch,
            on_baseline_epoch=on_baseline_epoch,
            cache=logit_cache,
        )
        teacher = members[
            next(i for i, c in enumerate(outcome.metrics["checkpoints"]) if c["chosen"])
        ]
    elif spec.get("assistants"):
        outcome, steps = distill_through_assistants(
            config,
            teacher,
            splits,
            assistant_plan(spec["assistants"], config, teacher),
            on_stage=lambda stage: _stage(lease, stage),
            on_assistant_epoch=lambda _step, _record: None,
            cache=logit_cache,
            on_epoch=on_epoch,
            on_baseline_epoch=on_baseline_epoch,
        )
    else:
        outcome = distill(
            config,
            teacher,
            splits,
            on_epoch=on_epoch,
            on_stage=lambda stage: _stage(lease, stage),
            cache=logit_cache,
            on_baseline_epoch=on_baseline_epoch,
        )

    _stage(lease, "exporting")
    workdir.mkdir(parents=True, exist_ok=True)
    onnx = export_onnx(
        outcome.student, teacher.input_shape, workdir / "student.onnx", sample=splits.test.x[:64]
    )
    save_safetensors(outcome.student, workdir / "student.safetensors")
    artifacts = dict(ARTIFACT_TYPES)
    for step in steps:
        name = f"assistant_{step.metrics['step']}.onnx"
        export = export_onnx(step.module, teacher.input_shape, workdir / name, splits.test.x[:64])
        step.metrics.update(onnx=name, onnx_bytes=export.bytes)
        artifacts[name] = ARTIFACT_TYPES["student.onnx"]
    _stage(lease, "measuring")
    latency = measure_latency(onnx.path, teacher)
    metrics: dict[str, Any] = {
        **outcome.metrics,
        "onnx_bytes": onnx.bytes,
        "onnx_max_abs_diff": onnx.max_abs_diff,
        "onnx_opset": onnx.opset,
        "latency_ms": latency,
        "history": [asdict(r) for r in outcome.history],
        "history_scratch": [asdict(r) for r in outcome.scratch_history],
        "split": split_report,
        "teacher_output_cache": {"hits": logit_cache.hits, "misses": logit_cache.misses},
        "teacher": {
            **found["teachers"][members.index(teacher) if checkpoints else 0][1],
            "input_shape": list(teacher.input_shape),
            "num_classes": teacher.num_classes,
            "ensemble": (
                [
                    {
                        **info,
                        "parameters": member.parameters,
                        "accuracy": accuracy(member.logits(splits.test.x), splits.test.y),
                    }
                    for member, (_, info) in zip(members, found["teachers"], strict=True)
                ]
                if len(members) > 1 and not checkpoints
                else None
            ),
        },
        "student": {**spec["student"], "sized": sizing},
        "method": spec["method"],
        "training": spec["training"],
        "cross_domain": cross_domain_report(teacher),
        "transfer_spec": {
            "transfer_dataset_ids": spec.get("transfer_dataset_ids", []),
            "synthesize": spec.get("transfer"),
        },
    }
    metrics = finite_json.finite_or_null(metrics)  # undefined values are null, never NaN
    (workdir / "metrics.json").write_text(finite_json.dumps(metrics, indent=2))
    (workdir / "report.html").write_text(render_report(job_id, metrics))

    _stage(lease, "storing")

    def deliver(session: Session) -> None:
        # One transaction, under the lease: the artifacts, the result and the final event
        # land together, once; a stale worker or a cancel in between leaves nothing.
        for name, media_type in artifacts.items():
            blob = store_file(session, workdir / name, settings.blob_chunk_bytes)
            session.merge(
                Artifact(
                    job_id=job_id,
                    name=name,
                    blob_id=blob.id,
                    media_type=media_type,
                    bytes=blob.size,
                    sha256=blob.sha256,
                )
            )
        job = session.get(Job, job_id)
        assert job is not None
        if job.cancel_requested:
            raise JobCancelled()
        job.status, job.stage, job.metrics = "succeeded", "done", metrics
        job.finished_at, job.epoch = utcnow(), len(outcome.history)
        session.execute(delete(TrainingCheckpoint).where(TrainingCheckpoint.job_id == job_id))
        record_event(
            session,
            job_id,
            "state",
            "succeeded",
            {"status": "succeeded", "student_accuracy": metrics.get("student_accuracy")},
        )

    lease.write(deliver, "storing the results")
    log.info("job succeeded")
