"""Running one job: claim the row, fetch blobs, call the engine, store artifacts, finish."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, update

from app.db import session_scope
from app.events import EventType, record_event
from app.jobs import fail_job
from app.models import Artifact, Blob, Dataset, Job, utcnow
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
    Teacher,
    TeacherRejected,
    accuracy,
    distill,
    distill_best_checkpoint,
    distill_through_assistants,
    export_onnx,
    load_teacher,
    save_safetensors,
)
from worker.plan import (
    JobInputError,
    assistant_plan,
    build_splits,
    distill_config,
    measure_latency,
    student_plan,
    transfer_rows,
)
from worker.report import render_report

log = logging.getLogger(__name__)

ARTIFACT_TYPES = {
    "student.onnx": "application/octet-stream",
    "student.safetensors": "application/octet-stream",
    "metrics.json": "application/json",
    "report.html": "text/html",
}


class JobCancelled(Exception):
    pass


def run_job(job_id: str) -> None:
    with job_context(job_id):
        _run(job_id)


def _run(job_id: str) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    if not _claim(job_id):
        return
    workdir = settings.tmp_dir / job_id
    try:
        _execute(job_id, settings, workdir)
    except JobCancelled:
        _set_state(job_id, status="cancelled", stage="cancelled", finished_at=utcnow())
        _event(job_id, "state", "cancelled", {"status": "cancelled"})
    except JobInputError as exc:
        _fail(job_id, exc.code, str(exc))
    except TeacherRejected as exc:
        _fail(job_id, "teacher_invalid", str(exc))
    except ExportCheckFailed as exc:
        _fail(job_id, "export_check_failed", str(exc))
    except MemoryError:
        _fail(job_id, "out_of_memory", "the job ran out of memory; use a smaller batch_size")
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _fail(job_id, "internal_error", f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _claim(job_id: str) -> bool:
    """queued -> running, atomically: a second delivery of the same message finds no row."""
    with session_scope() as session:
        claimed = _rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    stage="preparing",
                    started_at=utcnow(),
                    worker=socket.gethostname(),
                )
            )
        )
    if not claimed:
        log.info("job %s is not queued any more; leaving it", job_id)
        return False
    _event(job_id, "state", f"running on {socket.gethostname()}", {"status": "running"})
    log.info("job claimed by %s", socket.gethostname())
    return True


def _event(job_id: str, type: EventType, message: str, data: dict[str, Any] | None = None) -> None:
    with session_scope() as session:
        record_event(session, job_id, type, message, data)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (the compare-and-set that keeps state changes single)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _set_state(job_id: str, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _fail(job_id: str, code: str, message: str) -> None:
    log.warning("job failed: %s: %s", code, message)
    with session_scope() as session:
        fail_job(session, job_id, code, message)


def _check_cancel(job_id: str) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.cancel_requested or job.status != "running":
            raise JobCancelled()


def _stage(job_id: str, stage: str) -> None:
    _check_cancel(job_id)
    _set_state(job_id, stage=stage)
    _event(job_id, "message", f"stage: {stage}", {"stage": stage})


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
        return found


def _blob(session: Any, blob_id: str) -> Blob:
    blob = session.get(Blob, blob_id)
    if blob is None:
        raise JobInputError("blob_missing", f"stored bytes {blob_id} are missing")
    return blob


def _execute(job_id: str, settings: Settings, workdir: Path) -> None:
    found = _fetch(settings, job_id)
    spec = found["spec"]
    _stage(job_id, "loading")
    members = [load_teacher(path) for path, _ in found["teachers"]]
    checkpoints = bool(spec.get("teacher_checkpoint_ids"))
    teacher: Teacher = (
        members[0]
        if len(members) == 1 or checkpoints
        else EnsembleTeacher(members, float(spec["method"]["temperature"]))
    )
    splits, split_report = build_splits(
        found["train"], found["validation"], found["test"], int(spec["training"]["seed"])
    )
    _set_state(job_id, split=split_report)
    if len(splits.test.x) == 0 or len(splits.validation.x) == 0:
        raise JobInputError("split_empty", "the held-out split is empty; upload more rows")
    transfer = spec.get("transfer")
    if found["transfer_paths"] or transfer:
        _stage(job_id, "transfer_set")
        splits = replace(splits, transfer=transfer_rows(found["transfer_paths"], transfer, splits))

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
        _set_state(job_id, epoch=record.epoch, metrics=progress())
        _event(job_id, "metrics", f"epoch {record.epoch}", {"phase": "student", **asdict(record)})
        _check_cancel(job_id)

    def on_baseline_epoch(record: EpochRecord) -> None:
        scratch.append(asdict(record))
        _set_state(job_id, metrics=progress())
        _event(
            job_id,
            "metrics",
            f"scratch epoch {record.epoch}",
            {"phase": "scratch", **asdict(record)},
        )
        _check_cancel(job_id)

    logit_cache = DiskLogitCache(settings.resolved_cache_dir / "teacher_outputs")
    student, sizing = student_plan(spec, teacher)
    config = distill_config(spec, student)
    steps: list[AssistantStep] = []
    if checkpoints:
        outcome, _ = distill_best_checkpoint(
            config,
            members,
            splits,
            on_stage=lambda stage: _stage(job_id, stage),
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
            on_stage=lambda stage: _stage(job_id, stage),
            on_assistant_epoch=lambda _step, _record: _check_cancel(job_id),
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
            on_stage=lambda stage: _stage(job_id, stage),
            cache=logit_cache,
            on_baseline_epoch=on_baseline_epoch,
        )

    _stage(job_id, "exporting")
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
    _stage(job_id, "measuring")
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
        "transfer_spec": {
            "transfer_dataset_ids": spec.get("transfer_dataset_ids", []),
            "synthesize": spec.get("transfer"),
        },
    }
    (workdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (workdir / "report.html").write_text(render_report(job_id, metrics))

    _stage(job_id, "storing")
    with session_scope() as session:
        for name, media_type in artifacts.items():
            path = workdir / name
            blob = store_file(session, path, settings.blob_chunk_bytes)
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
        finished = _rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running", Job.cancel_requested.is_(False))
                .values(
                    status="succeeded",
                    stage="done",
                    metrics=metrics,
                    finished_at=utcnow(),
                    epoch=len(outcome.history),
                )
            )
        )
        if not finished:
            # Cancelled while storing: keep nothing half-delivered.
            session.rollback()
            raise JobCancelled()
        log.info("job succeeded")
        record_event(
            session,
            job_id,
            "state",
            "succeeded",
            {"status": "succeeded", "student_accuracy": metrics.get("student_accuracy")},
        )
