"""Running one job: claim the row, fetch blobs, call the engine, store artifacts, finish."""

from __future__ import annotations

import json
import logging
import shutil
import socket
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import CursorResult, update

from app.datafiles import load_arrays
from app.db import session_scope
from app.jobs import fail_job
from app.models import Artifact, Blob, Dataset, Job, utcnow
from app.models import Teacher as TeacherRow
from app.settings import Settings, get_settings
from app.storage import cached_blob, store_file
from worker.engine import (
    ArraySplit,
    AssistantStep,
    DiskLogitCache,
    DistillConfig,
    EnsembleTeacher,
    EpochRecord,
    ExportCheckFailed,
    KDMethod,
    Splits,
    StudentSpec,
    SynthesisSpec,
    Teacher,
    TeacherRejected,
    TrainingSpec,
    TransferRows,
    accuracy,
    assistant_specs,
    distill,
    distill_through_assistants,
    export_onnx,
    load_teacher,
    random_split,
    save_safetensors,
    stratified_split,
    synthesize,
)
from worker.engine.evaluation import onnx_latency_ms, teacher_latency_ms
from worker.report import render_report

log = logging.getLogger(__name__)

HELD_OUT_FRACTION = 0.15
ARTIFACT_TYPES = {
    "student.onnx": "application/octet-stream",
    "student.safetensors": "application/octet-stream",
    "metrics.json": "application/json",
    "report.html": "text/html",
}


class JobCancelled(Exception):
    pass


class JobInputError(Exception):
    """A problem with the job's inputs found only when it ran; the message is for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def run_job(job_id: str) -> None:
    settings = get_settings()
    settings.ensure_dirs()
    if not _claim(job_id):
        return
    workdir = settings.tmp_dir / job_id
    try:
        _execute(job_id, settings, workdir)
    except JobCancelled:
        _set_state(job_id, status="cancelled", stage="cancelled", finished_at=utcnow())
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
    return bool(claimed)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE matched (the compare-and-set that keeps state changes single)."""
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def _set_state(job_id: str, **values: Any) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _fail(job_id: str, code: str, message: str) -> None:
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


def _fetch(settings: Settings, job_id: str) -> dict[str, Any]:
    """Local paths of the teacher and datasets, from the worker's cache by sha256."""
    cache = settings.resolved_cache_dir
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        found: dict[str, Any] = {"spec": dict(job.spec), "teachers": []}
        for teacher_id in job.spec.get("teacher_ids") or [job.teacher_id]:
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


def build_splits(
    train_path: Path, validation_path: Path | None, test_path: Path | None, seed: int
) -> tuple[Splits, dict[str, Any]]:
    """Use the given held-out datasets; carve what is missing out of train, stratified."""
    x, y = load_arrays(train_path)
    given_val = ArraySplit(*load_arrays(validation_path)) if validation_path else None
    given_test = ArraySplit(*load_arrays(test_path)) if test_path else None
    held_out = HELD_OUT_FRACTION * ((given_val is None) + (given_test is None))
    report: dict[str, Any] = {"seed": seed}
    if held_out == 0:
        assert given_val is not None and given_test is not None
        parts = [np.arange(len(x)), np.array([], dtype=np.int64), np.array([], dtype=np.int64)]
    else:
        val_fraction = HELD_OUT_FRACTION if given_val is None else 0.0
        test_fraction = HELD_OUT_FRACTION if given_test is None else 0.0
        fractions = (1.0 - held_out, val_fraction, test_fraction)
        if y is not None:
            parts = list(stratified_split(y, fractions, seed))
            report["method"] = "stratified by class"
        else:
            parts = list(random_split(len(x), fractions, seed))
            report["method"] = "random (unlabeled data)"
        report["fractions"] = {
            "train": fractions[0],
            "validation": val_fraction,
            "test": test_fraction,
        }

    def part(i: int) -> ArraySplit:
        return ArraySplit(x[parts[i]], y[parts[i]] if y is not None else None)

    splits = Splits(
        train=part(0),
        validation=given_val or part(1),
        test=given_test or part(2),
    )
    report.update(
        {
            "train": {"rows": len(splits.train.x), "source": "train_dataset_id"},
            "validation": {
                "rows": len(splits.validation.x),
                "source": "validation_dataset_id" if given_val else "held out of train",
            },
            "test": {
                "rows": len(splits.test.x),
                "source": "test_dataset_id" if given_test else "held out of train",
            },
        }
    )
    return splits, report


def transfer_rows(
    datasets: list[tuple[str, Path]], transfer: dict[str, Any] | None, splits: Splits
) -> tuple[TransferRows, ...]:
    """Rows from transfer datasets, then rows synthesized from the training split only."""
    parts = [
        TransferRows(source=dataset_id, x=load_arrays(path)[0]) for dataset_id, path in datasets
    ]
    if transfer:
        methods = transfer["synthesize"]
        for method in dict.fromkeys([methods] if isinstance(methods, str) else methods):
            spec = SynthesisSpec(
                method=method,
                size=int(transfer["size"]),
                seed=int(transfer["seed"]),
                mixup_alpha=float(transfer["mixup_alpha"]),
                noise_sigma=float(transfer["noise_sigma"]),
                shift_pixels=int(transfer["shift_pixels"]),
            )
            parts.append(TransferRows(source=method, x=synthesize(splits.train.x, spec)))
    return tuple(parts)


def measure_latency(student_onnx: Path, teacher: Teacher) -> dict[str, Any]:
    """Median latency on this worker of the ONNX student and the teacher in its own runtime."""
    shape = teacher.input_shape
    result: dict[str, Any] = {"teacher_runtime": teacher.format, "repeats": 30}
    for batch in (1, 64):
        student_ms = onnx_latency_ms(student_onnx, shape, batch)
        teacher_ms = teacher_latency_ms(teacher.logits, shape, batch)
        result[f"batch_{batch}"] = {
            "student_onnx": student_ms,
            "teacher": teacher_ms,
            "speedup": teacher_ms / student_ms if student_ms > 0 else None,
        }
    return result


def _assistant_specs(
    assistants: dict[str, Any], config: DistillConfig, teacher: Teacher
) -> list[StudentSpec]:
    student = config.student
    if assistants.get("hidden_sizes"):
        return [replace(student, hidden_sizes=tuple(h)) for h in assistants["hidden_sizes"]]
    if assistants.get("channels"):
        return [replace(student, channels=tuple(c)) for c in assistants["channels"]]
    try:
        return assistant_specs(
            student,
            teacher.input_shape,
            teacher.num_classes,
            teacher.parameters,
            int(assistants["count"]),
        )
    except ValueError as exc:
        raise JobInputError("assistants_invalid", str(exc)) from exc


def _config(spec: dict[str, Any]) -> DistillConfig:
    student, method, training = spec["student"], spec["method"], spec["training"]
    return DistillConfig(
        student=StudentSpec(
            architecture=student["architecture"],
            hidden_sizes=tuple(student["hidden_sizes"]),
            dropout=float(student["dropout"]),
            batch_norm=bool(student["batch_norm"]),
            channels=tuple(student["channels"]),
        ),
        method=KDMethod(
            temperature=float(method["temperature"]),
            alpha=float(method["alpha"]),
            kd_stop_epoch=method.get("kd_stop_epoch"),
        ),
        training=TrainingSpec(
            epochs=int(training["epochs"]),
            batch_size=int(training["batch_size"]),
            learning_rate=float(training["learning_rate"]),
            weight_decay=float(training["weight_decay"]),
            seed=int(training["seed"]),
        ),
        baseline=bool(spec.get("baseline", True)),
    )


def _execute(job_id: str, settings: Settings, workdir: Path) -> None:
    found = _fetch(settings, job_id)
    spec = found["spec"]
    _stage(job_id, "loading")
    members = [load_teacher(path) for path, _ in found["teachers"]]
    teacher: Teacher = (
        members[0]
        if len(members) == 1
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
        history.append(asdict(record))
        _set_state(job_id, epoch=record.epoch, metrics=progress())
        _check_cancel(job_id)

    def on_baseline_epoch(record: EpochRecord) -> None:
        scratch.append(asdict(record))
        _set_state(job_id, metrics=progress())
        _check_cancel(job_id)

    logit_cache = DiskLogitCache(settings.resolved_cache_dir / "teacher_outputs")
    config = _config(spec)
    steps: list[AssistantStep] = []
    if spec.get("assistants"):
        outcome, steps = distill_through_assistants(
            config,
            teacher,
            splits,
            _assistant_specs(spec["assistants"], config, teacher),
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
            **found["teachers"][0][1],
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
                if len(members) > 1
                else None
            ),
        },
        "student": spec["student"],
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
