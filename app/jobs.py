"""Job bookkeeping: what is checked at submission, state changes, the public view."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from app.errors import InvalidInput, TooManyRequests
from app.events import record_event
from app.finite_json import finite_or_null
from app.job_memory_check import check_job_memory
from app.models import Dataset, Job, Teacher, new_id, utcnow
from app.outbox import enqueue
from app.schemas import JobCreate
from app.settings import Settings, get_settings

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Below this many labeled rows a held-out split of train says nothing useful.
MIN_ROWS_FOR_SPLIT = 20


def _dataset(session: Session, field: str, dataset_id: str, tenant: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.tenant_id != tenant:
        raise InvalidInput(f"no dataset with id {dataset_id!r}", field=field, code="unknown_id")
    return dataset


def _check_matches_teacher(
    field: str, dataset: Dataset, teacher: Teacher, labels_matter: bool = True
) -> None:
    if list(dataset.feature_shape) != list(teacher.input_shape):
        raise InvalidInput(
            f"dataset {dataset.id} has feature shape {dataset.feature_shape} but teacher "
            f"{teacher.id} takes input shape {teacher.input_shape}; the student takes exactly "
            "the teacher's input, so reshape the data to the teacher's input shape",
            field=field,
            code="shape_mismatch",
        )
    if (
        labels_matter
        and dataset.num_classes is not None
        and (dataset.num_classes > teacher.num_classes)
    ):
        raise InvalidInput(
            f"dataset {dataset.id} has label {dataset.num_classes - 1} but teacher "
            f"{teacher.id} has {teacher.num_classes} classes (labels 0..{teacher.num_classes - 1})",
            field=field,
            code="labels_out_of_range",
        )


def _teachers(session: Session, body: JobCreate, tenant: str) -> Teacher:
    """The job's teacher, or the first of an ensemble whose members all match it."""
    first: Teacher | None = None
    for i, teacher_id in enumerate(body.teachers):
        field = body.teacher_field
        field = f"{field}.{i}" if field != "teacher_id" else field
        teacher = session.get(Teacher, teacher_id)
        if teacher is None or teacher.tenant_id != tenant:
            raise InvalidInput(f"no teacher with id {teacher_id!r}", field=field, code="unknown_id")
        if teacher.status != "ready":
            raise InvalidInput(f"teacher {teacher.id} is {teacher.status}, not ready", field=field)
        if first is None:
            first = teacher
        elif (teacher.input_shape, teacher.num_classes) != (first.input_shape, first.num_classes):
            raise InvalidInput(
                f"teacher {teacher.id} takes {teacher.input_shape} with {teacher.num_classes} "
                f"classes but teacher {first.id} takes {first.input_shape} with "
                f"{first.num_classes}; the teachers of one job must agree",
                field=field,
                code="shape_mismatch",
            )
    assert first is not None
    return first


def validate_submission(session: Session, body: JobCreate, tenant: str) -> tuple[Teacher, Dataset]:
    """Everything that can be known before training; each problem names its field."""
    teacher = _validate_cross_domain(session, body, _teachers(session, body, tenant), tenant)
    train = _dataset(session, "train_dataset_id", body.train_dataset_id, tenant)
    _check_matches_teacher("train_dataset_id", train, teacher)
    if train.rows < 1:
        raise InvalidInput("the training dataset is empty", field="train_dataset_id")
    if not train.labeled and body.method.alpha > 0:
        raise InvalidInput(
            f"dataset {train.id} has no labels but method.alpha = {body.method.alpha} weighs a "
            "hard-label term; upload labels or set method.alpha to 0 (pure distillation)",
            field="train_dataset_id",
            code="labels_required",
        )
    for field, dataset_id in (
        ("validation_dataset_id", body.validation_dataset_id),
        ("test_dataset_id", body.test_dataset_id),
    ):
        if dataset_id is None:
            continue
        held_out = _dataset(session, field, dataset_id, tenant)
        _check_matches_teacher(field, held_out, teacher)
        if not held_out.labeled:
            raise InvalidInput(
                f"dataset {held_out.id} has no labels; held-out data is scored against labels",
                field=field,
                code="labels_required",
            )
    needs_split = body.validation_dataset_id is None or body.test_dataset_id is None
    if needs_split and train.rows < MIN_ROWS_FOR_SPLIT:
        raise InvalidInput(
            f"dataset {train.id} has {train.rows} rows: too few to hold out validation and test "
            f"rows (at least {MIN_ROWS_FOR_SPLIT}); upload more rows or give "
            "validation_dataset_id and test_dataset_id",
            field="train_dataset_id",
        )
    if body.student.architecture == "cnn" and len(teacher.input_shape) not in (2, 3):
        raise InvalidInput(
            f"a cnn student needs inputs shaped (C, H, W) or (C, L); teacher {teacher.id} takes "
            f"{teacher.input_shape}: use architecture 'mlp'",
            field="student.architecture",
        )
    if needs_split and train.labeled and train.class_counts:
        rare = [k for k, n in train.class_counts.items() if n < 3]
        if rare:
            raise InvalidInput(
                f"classes {', '.join(sorted(rare))} have fewer than 3 rows in dataset "
                f"{train.id}, too few to split into train, validation and test; add rows or "
                "give validation_dataset_id and test_dataset_id",
                field="train_dataset_id",
            )
    _validate_transfer(session, body, teacher, train, tenant)
    _validate_assistants(body)
    _validate_hint(body, teacher)
    stop = body.method.kd_stop_epoch
    if stop is not None and stop > body.training.epochs:
        raise InvalidInput(
            f"kd_stop_epoch {stop} is past the last epoch ({body.training.epochs})",
            field="method.kd_stop_epoch",
        )
    if stop is not None and not train.labeled:
        raise InvalidInput(
            "after kd_stop_epoch only hard labels train the student, and the training "
            f"dataset {train.id} has none",
            field="method.kd_stop_epoch",
            code="labels_required",
        )
    if not math.isfinite(body.training.learning_rate):
        raise InvalidInput("must be a finite number", field="training.learning_rate")
    return teacher, train


def _validate_transfer(
    session: Session, body: JobCreate, teacher: Teacher, train: Dataset, tenant: str
) -> None:
    for i, dataset_id in enumerate(body.transfer_dataset_ids):
        field = f"transfer_dataset_ids.{i}"
        dataset = _dataset(session, field, dataset_id, tenant)
        _check_matches_teacher(field, dataset, teacher, labels_matter=False)
    if body.transfer is None:
        return
    if "vae" in body.transfer.methods and (
        body.cross_domain is None or body.cross_domain.phi != "vae"
    ):
        raise InvalidInput(
            "'vae' synthesis decodes new inputs with the VAE that a cross-domain job trains; "
            "set cross_domain.phi to 'vae' (with cross_domain.source_dataset_id), or "
            "synthesize with 'mixup', 'noise' or 'shift'",
            field="transfer.synthesize",
            code="vae_required",
        )


def _validate_cross_domain(
    session: Session, body: JobCreate, teacher: Teacher, tenant: str
) -> Teacher:
    """The teacher as the student sees it: f o phi takes target-domain inputs (the job's
    datasets), so every later shape check compares with the target shape."""
    cross = body.cross_domain
    if cross is None:
        return teacher
    if cross.stray_fields:
        name = cross.stray_fields[0]
        raise InvalidInput(
            f"phi {cross.phi!r} does not use {name}; remove it or choose the phi that reads it",
            field=f"cross_domain.{name}",
        )
    train = _dataset(session, "train_dataset_id", body.train_dataset_id, tenant)
    target_shape = list(train.feature_shape)
    source_shape = list(teacher.input_shape)
    if cross.phi in ("identity", "gaussian_noise", "dilated_conv"):
        if target_shape != source_shape:
            raise InvalidInput(
                f"phi {cross.phi!r} keeps the input's shape, but the target data "
                f"{train.id} has shape {target_shape} and teacher {teacher.id} takes "
                f"{source_shape}; use phi 'onnx' or 'vae' to map between shapes",
                field="cross_domain.phi",
                code="shape_mismatch",
            )
        if cross.phi == "dilated_conv" and len(target_shape) not in (1, 2, 3):
            raise InvalidInput(
                f"a convolution maps rows shaped (L,), (C, L) or (C, H, W), not {target_shape}",
                field="cross_domain.phi",
            )
    elif cross.phi == "onnx":
        if cross.mapping_id is None:
            raise InvalidInput(
                "phi 'onnx' needs mapping_id: upload the mapping with POST /v1/teachers",
                field="cross_domain.mapping_id",
            )
        mapping = session.get(Teacher, cross.mapping_id)
        if mapping is None or mapping.tenant_id != tenant:
            raise InvalidInput(
                f"no uploaded model with id {cross.mapping_id!r}",
                field="cross_domain.mapping_id",
                code="unknown_id",
            )
        if mapping.format != "onnx" or mapping.status != "ready":
            raise InvalidInput(
                f"model {mapping.id} is {mapping.format} ({mapping.status}); a mapping must be "
                "a ready ONNX model",
                field="cross_domain.mapping_id",
            )
        if list(mapping.input_shape) != target_shape:
            raise InvalidInput(
                f"mapping {mapping.id} takes input shape {mapping.input_shape} but the target "
                f"data {train.id} has shape {target_shape}",
                field="cross_domain.mapping_id",
                code="shape_mismatch",
            )
        # The upload route records a [batch, k] output's width as num_classes.
        if mapping.num_classes != math.prod(source_shape):
            raise InvalidInput(
                f"mapping {mapping.id} outputs {mapping.num_classes} values per row but teacher "
                f"{teacher.id} takes input shape {source_shape} ({math.prod(source_shape)} "
                "values); the mapping's output must be the teacher's input",
                field="cross_domain.mapping_id",
                code="shape_mismatch",
            )
    else:
        _validate_vae(
            session, cross.source_dataset_id, cross.target_dataset_id, train, teacher, tenant
        )
    return Teacher(
        id=teacher.id,
        status=teacher.status,
        format=teacher.format,
        input_shape=target_shape,
        num_classes=teacher.num_classes,
        parameters=teacher.parameters,
        output_name=teacher.output_name,
        output_kind=teacher.output_kind,
        inspection=teacher.inspection,
    )


def _validate_vae(
    session: Session,
    source_id: str | None,
    target_id: str | None,
    train: Dataset,
    teacher: Teacher,
    tenant: str,
) -> None:
    if source_id is None:
        raise InvalidInput(
            "phi 'vae' needs source_dataset_id: labeled rows of the teacher's domain",
            field="cross_domain.source_dataset_id",
        )
    source = _dataset(session, "cross_domain.source_dataset_id", source_id, tenant)
    if list(source.feature_shape) != list(teacher.input_shape):
        raise InvalidInput(
            f"source dataset {source.id} has shape {source.feature_shape} but teacher "
            f"{teacher.id} takes {teacher.input_shape}",
            field="cross_domain.source_dataset_id",
            code="shape_mismatch",
        )
    field = "cross_domain.target_dataset_id" if target_id else "train_dataset_id"
    target = _dataset(session, field, target_id, tenant) if target_id else train
    if list(target.feature_shape) != list(train.feature_shape):
        raise InvalidInput(
            f"target dataset {target.id} has shape {target.feature_shape} but the training "
            f"data {train.id} has {train.feature_shape}",
            field=field,
            code="shape_mismatch",
        )
    for name, dataset in (("cross_domain.source_dataset_id", source), (field, target)):
        if not dataset.labeled:
            raise InvalidInput(
                f"dataset {dataset.id} has no labels; the VAE pairs rows of the two domains "
                "by class",
                field=name,
                code="labels_required",
            )
    unpaired = sorted(set(target.class_counts or {}) - set(source.class_counts or {}))
    if unpaired:
        raise InvalidInput(
            f"classes {', '.join(unpaired)} of the target data have no rows in source dataset "
            f"{source.id} to pair with",
            field="cross_domain.source_dataset_id",
            code="classes_unpaired",
        )


def _validate_hint(body: JobCreate, teacher: Teacher) -> None:
    hint = body.method.hint
    if hint is None:
        return
    if len(body.teachers) > 1:
        raise InvalidInput(
            "a hint names a tensor of one teacher; it cannot be used with several teachers",
            field="method.hint",
        )
    candidates = list(teacher.inspection.get("hint_candidates", []))
    if hint.teacher_output not in candidates:
        shown = ", ".join(candidates[:20]) or "none (hints need an ONNX teacher)"
        raise InvalidInput(
            f"teacher {teacher.id} has no intermediate tensor {hint.teacher_output!r}; "
            f"candidates: {shown}",
            field="method.hint.teacher_output",
        )


def _validate_assistants(body: JobCreate) -> None:
    assistants = body.assistants
    if assistants is None:
        return
    if assistants.hidden_sizes is not None and body.student.architecture != "mlp":
        raise InvalidInput(
            "assistants.hidden_sizes sizes mlp assistants; this student is a cnn: give "
            "assistants.channels",
            field="assistants.hidden_sizes",
        )
    if assistants.channels is not None and body.student.architecture != "cnn":
        raise InvalidInput(
            "assistants.channels sizes cnn assistants; this student is an mlp: give "
            "assistants.hidden_sizes",
            field="assistants.channels",
        )


def _validate_limits(
    session: Session, body: JobCreate, teacher: Teacher, tenant: str, settings: Settings
) -> None:
    limit = body.training.time_limit_seconds
    if limit is not None and limit > settings.job_time_limit_seconds:
        raise InvalidInput(
            f"at most {settings.job_time_limit_seconds} s on this server",
            field="training.time_limit_seconds",
        )
    if body.training.jitter_pixels and len(teacher.input_shape) < 2:
        raise InvalidInput(
            f"jitter shifts images; teacher {teacher.id} takes flat inputs "
            f"{teacher.input_shape}: set training.jitter_pixels to 0",
            field="training.jitter_pixels",
        )
    check_job_memory(session, body, teacher, settings)
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant, Job.status.in_(("queued", "running")))
    )
    if (active or 0) >= settings.max_active_jobs_per_tenant:
        raise TooManyRequests(
            f"this tenant has {active} jobs queued or running, the most this server allows; "
            "submit again when one has finished",
            retry_after=30,
            code="too_many_active_jobs",
        )


def create_job(session: Session, body: JobCreate, tenant: str, job_id: str | None = None) -> Job:
    """Check and insert the job, with its message in the outbox of the same transaction."""
    settings = get_settings()
    teacher, _ = validate_submission(session, body, tenant)
    _validate_limits(session, body, teacher, tenant, settings)
    job = Job(
        id=job_id or new_id("job"),
        tenant_id=tenant,
        time_limit_seconds=body.training.time_limit_seconds or settings.job_time_limit_seconds,
        status="queued",
        stage="queued",
        epoch=0,
        epochs=body.training.epochs,
        teacher_id=body.teachers[0],
        train_dataset_id=body.train_dataset_id,
        validation_dataset_id=body.validation_dataset_id,
        test_dataset_id=body.test_dataset_id,
        spec={
            "student": body.student.model_dump(),
            "method": body.method.model_dump(),
            "training": body.training.model_dump(),
            "transfer_dataset_ids": list(body.transfer_dataset_ids),
            "transfer": body.transfer.model_dump() if body.transfer else None,
            "baseline": body.baseline,
            "teacher_ids": body.teachers if not body.teacher_checkpoint_ids else [],
            "teacher_checkpoint_ids": list(body.teacher_checkpoint_ids),
            "assistants": body.assistants.model_dump() if body.assistants else None,
            "cross_domain": body.cross_domain.model_dump() if body.cross_domain else None,
        },
        cancel_requested=False,
    )
    session.add(job)
    session.flush()
    record_event(session, job.id, "state", "queued", {"status": "queued"})
    enqueue(session, job.id)
    return job


def _changed(result: Any) -> bool:
    assert isinstance(result, CursorResult)
    return bool(result.rowcount)


def request_cancel(session: Session, job_id: str) -> None:
    """Queued jobs are cancelled at once; running ones are asked to stop: the worker sees the
    request at its next heartbeat and stops before its next training step."""
    now = utcnow()
    if _changed(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="cancelled", stage="cancelled", finished_at=now, cancel_requested=True)
        )
    ):
        record_event(
            session, job_id, "state", "cancelled before it started", {"status": "cancelled"}
        )
    elif _changed(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.cancel_requested.is_(False))
            .values(cancel_requested=True)
        )
    ):
        record_event(
            session, job_id, "message", "cancel requested; stopping at the next training step"
        )


def fail_job(session: Session, job_id: str, code: str, message: str) -> None:
    if _changed(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(("queued", "running")))
            .values(
                status="failed",
                stage="failed",
                error_code=code,
                error_message=message,
                finished_at=utcnow(),
            )
        )
    ):
        record_event(
            session,
            job_id,
            "state",
            f"failed: {message}",
            {"status": "failed", "error": {"code": code, "message": message}},
        )


def job_public(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "epoch": job.epoch,
        "epochs": job.epochs,
        "metrics": finite_or_null(job.metrics),
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
        "teacher_id": job.teacher_id,
        "teacher_ids": job.spec.get("teacher_ids") or [job.teacher_id],
        "teacher_checkpoint_ids": job.spec.get("teacher_checkpoint_ids", []),
        "train_dataset_id": job.train_dataset_id,
        "validation_dataset_id": job.validation_dataset_id,
        "test_dataset_id": job.test_dataset_id,
        "student": job.spec["student"],
        "method": job.spec["method"],
        "training": job.spec["training"],
        "split": job.split,
        "transfer_dataset_ids": job.spec.get("transfer_dataset_ids", []),
        "transfer": job.spec.get("transfer"),
        "baseline": job.spec.get("baseline", True),
        "assistants": job.spec.get("assistants"),
        "cross_domain": job.spec.get("cross_domain"),
    }
