"""Refusing, at submission, a job that needs more memory than a worker has (app/jobs/memory.py
estimates it): a 422 naming the field to change, with the figure and the limit."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.jobs.memory import (
    FLOAT,
    Estimate,
    Layout,
    Rows,
    parameters,
    sized,
    training_estimate,
    vae_estimate,
    vae_parameters,
)
from app.jobs.spec import AUTO_WIDTHS, JobSpec, TransferConfig, VaePhi
from app.models import Dataset, Teacher
from app.settings import Settings

if TYPE_CHECKING:
    from app.jobs.validation import TeacherView


def _rows_of(session: Session, dataset_id: str | None) -> int:
    dataset = session.get(Dataset, dataset_id) if dataset_id else None
    return dataset.rows if dataset is not None else 0


def _rows(session: Session, spec: JobSpec, features: int, classes: int, auto_max_rows: int) -> Rows:
    """The job's rows, from the datasets it names (validation found them all already); a
    default transfer set counts as its most rows."""
    train = _rows_of(session, spec.train_dataset_id)
    transfer = sum(_rows_of(session, i) for i in spec.transfer_dataset_ids)
    if isinstance(spec.transfer, TransferConfig):
        transfer += spec.transfer.size * len(spec.transfer.methods)
    elif spec.transfer == "auto" and not spec.transfer_dataset_ids:
        transfer += auto_max_rows
    held_out = _rows_of(session, spec.validation_dataset_id)
    held_out += _rows_of(session, spec.test_dataset_id)
    return Rows(train + transfer + held_out, train + transfer, features, classes)


def _student_field(spec: JobSpec) -> str:
    if spec.student.max_parameters is not None:
        return "student.max_parameters"
    if spec.student.compression is not None:
        return "student.compression"
    return "student.channels" if spec.student.architecture == "cnn" else "student.hidden_sizes"


def _steps(spec: JobSpec, teacher: TeacherView, shape: list[int]) -> list[tuple[Layout, int, str]]:
    """Each model the job trains in turn (assistants, largest first, then the student), its
    parameters, and the field that sizes it."""
    wanted = spec.student
    layout = Layout(
        wanted.architecture,
        wanted.layout,
        tuple(wanted.channels),
        wanted.batch_norm,
        wanted.dropout,
    )
    classes = teacher.num_classes
    budget = wanted.budget(teacher.parameters)
    if budget is not None:
        layout = sized(layout, shape, classes, budget)
    if wanted.sized_from_teacher:  # as the worker clamps the default student's widths
        low, high = AUTO_WIDTHS
        layout = replace(
            layout, hidden_sizes=tuple(min(high, max(low, h)) for h in layout.hidden_sizes)
        )
    student = parameters(layout, shape, classes)
    steps: list[tuple[Layout, int, str]] = []
    assistants = spec.assistants
    if assistants is not None and assistants.count is not None:
        # Sized geometrically between the student and the teacher: the largest comes first.
        for step in range(assistants.count, 0, -1):
            target = student * max(1.0, teacher.parameters / max(student, 1)) ** (
                step / (assistants.count + 1)
            )
            wide = sized(layout, shape, classes, int(target))
            steps.append((wide, parameters(wide, shape, classes), "assistants.count"))
    elif assistants is not None:
        for sizes in assistants.hidden_sizes or []:
            mlp = Layout("mlp", tuple(sizes), layout.channels, layout.batch_norm, layout.dropout)
            steps.append((mlp, parameters(mlp, shape, classes), "assistants.hidden_sizes"))
        for widths in assistants.channels or []:
            cnn = Layout("cnn", layout.hidden_sizes, tuple(widths))
            steps.append((cnn, parameters(cnn, shape, classes), "assistants.channels"))
    return [*steps, (layout, student, _student_field(spec))]


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


def _memory_field(spec: JobSpec, estimate: Estimate, model_field: str) -> str:
    if estimate.largest == "activations":
        return "training.batch_size"
    if estimate.largest == "model":
        return model_field
    if isinstance(spec.transfer, TransferConfig):
        return "transfer.size"
    if spec.transfer == "auto" and not spec.transfer_dataset_ids:
        return "transfer"
    return "transfer_dataset_ids" if spec.transfer_dataset_ids else "train_dataset_id"


def check_job_memory(
    session: Session, spec: JobSpec, teacher: TeacherView, settings: Settings
) -> None:
    """422 if a model the job trains has more parameters than DISTILLERY_MAX_STUDENT_PARAMETERS,
    or the job's estimated memory is over DISTILLERY_MAX_JOB_MEMORY_BYTES."""
    shape = list(teacher.input_shape)
    steps = _steps(spec, teacher, shape)
    limit = settings.max_student_parameters
    vae = _vae_parameters(session, spec, teacher, shape)
    counted = [(count, field) for _, count, field in steps] + [(vae, "cross_domain.hidden")]
    for count, field in counted:
        if count > limit:
            raise InvalidInput(
                f"a model of this job would have {count:,} parameters, over the limit of "
                f"{limit:,} (DISTILLERY_MAX_STUDENT_PARAMETERS); use fewer or narrower layers",
                field=field,
                code="student_too_large",
            )
    rows = _rows(
        session, spec, math.prod(shape), teacher.num_classes, settings.auto_transfer_max_rows
    )
    estimate = training_estimate(
        rows,
        [(layout, count) for layout, count, _ in steps],
        shape,
        spec.training.batch_size,
        spec.training.jitter_pixels > 0,
        spec.baseline,
    )
    estimate = _with_vae(session, spec, teacher, shape, estimate)
    if estimate.total_bytes > settings.max_job_memory_bytes:
        raise InvalidInput(
            f"this job would need about {_gib(estimate.total_bytes)} of memory on its worker "
            f"(data {_gib(estimate.data_bytes)}: {rows.all:,} rows of {rows.features:,} values; "
            f"models {_gib(estimate.model_bytes)}: {steps[-1][1]:,} student parameters with "
            f"their gradients, Adam moments and checkpoints; activations "
            f"{_gib(estimate.activation_bytes)} for batches of {spec.training.batch_size}), over "
            f"the limit of {_gib(settings.max_job_memory_bytes)} "
            "(DISTILLERY_MAX_JOB_MEMORY_BYTES); use fewer rows, a smaller student or batch",
            field=_memory_field(spec, estimate, steps[-1][2]),
            code="job_memory_limit",
        )


def _vae_parameters(session: Session, spec: JobSpec, teacher: TeacherView, shape: list[int]) -> int:
    cross = spec.cross_domain
    original = session.get(Teacher, teacher.id)
    if not isinstance(cross, VaePhi) or original is None or original.input_shape is None:
        return 0
    source_features = math.prod(original.input_shape)
    return vae_parameters(math.prod(shape), source_features, cross.hidden, cross.latent_dim)


def _with_vae(
    session: Session, spec: JobSpec, teacher: TeacherView, shape: list[int], estimate: Estimate
) -> Estimate:
    """A cross-domain VAE trains first and stays (as the mapping) while the student trains."""
    cross = spec.cross_domain
    if not isinstance(cross, VaePhi):
        return estimate
    source = session.get(Dataset, cross.source_dataset_id)
    original = session.get(Teacher, teacher.id)
    if source is None or original is None or original.input_shape is None:
        return estimate
    target_features, source_features = math.prod(shape), math.prod(original.input_shape)
    count = vae_parameters(target_features, source_features, cross.hidden, cross.latent_dim)
    if count > 0:
        vae = vae_estimate(
            _rows_of(session, cross.target_dataset_id or spec.train_dataset_id),
            source.rows,
            target_features,
            source_features,
            cross.hidden,
            cross.latent_dim,
        )
        during = Estimate(
            estimate.data_bytes + vae.data_bytes, vae.model_bytes, vae.activation_bytes
        )
        after = Estimate(
            estimate.data_bytes, estimate.model_bytes + FLOAT * count, estimate.activation_bytes
        )
        return max(during, after, key=lambda e: e.total_bytes)
    return estimate
