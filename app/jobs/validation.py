"""What can be known about a job before it trains, checked at submission. Each problem is an
InvalidInput that names the request field to blame."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import workers
from app.errors import InvalidInput, TooManyRequests
from app.jobs.memory_check import check_job_memory
from app.jobs.spec import (
    DilatedConvPhi,
    GaussianNoisePhi,
    IdentityPhi,
    JobSpec,
    OnnxPhi,
    TransferConfig,
    VaePhi,
)
from app.jobs.state import ACTIVE
from app.jobs.text_validation import (
    check_text_job,
    matches_text_teacher,
    tensor_data_for_tensor_teacher,
)
from app.models import Dataset, Job, Teacher
from app.settings import Settings

# Below this many labeled rows a held-out split of train says nothing useful.
MIN_ROWS_FOR_SPLIT = 20


@dataclass(frozen=True)
class TeacherView:
    """The teacher as the student sees it: through phi in a cross-domain job, it takes the
    target domain's inputs, so every later shape check compares with those."""

    id: str
    input_shape: list[int]
    num_classes: int
    parameters: int
    hint_candidates: list[str]
    modality: str = "tensor"
    class_names: list[str] = dataclass_field(default_factory=list)

    @classmethod
    def of(cls, teacher: Teacher) -> TeacherView:
        """A ready teacher's view (only an inspected teacher has shapes and classes)."""
        assert teacher.input_shape is not None and teacher.num_classes is not None
        return cls(
            id=teacher.id,
            input_shape=list(teacher.input_shape),
            num_classes=teacher.num_classes,
            parameters=teacher.parameters or 0,
            hint_candidates=teacher.hint_candidates,
            modality=teacher.modality or "tensor",
            class_names=teacher.class_names or [],
        )


def dataset(session: Session, field: str, dataset_id: str, tenant: str) -> Dataset:
    found = session.get(Dataset, dataset_id)
    if found is None or found.tenant_id != tenant:
        raise InvalidInput(f"no dataset with id {dataset_id!r}", field=field, code="unknown_id")
    return found


def _matches_teacher(
    field: str, data: Dataset, teacher: TeacherView, labels_matter: bool = True
) -> None:
    if teacher.modality == "text":
        matches_text_teacher(field, data, teacher, labels_matter)
        return
    tensor_data_for_tensor_teacher(field, data, teacher)
    if list(data.feature_shape) != teacher.input_shape:
        raise InvalidInput(
            f"dataset {data.id} has feature shape {data.feature_shape} but teacher "
            f"{teacher.id} takes input shape {teacher.input_shape}; the student takes exactly "
            "the teacher's input, so reshape the data to the teacher's input shape",
            field=field,
            code="shape_mismatch",
        )
    if labels_matter and data.num_classes is not None and data.num_classes > teacher.num_classes:
        raise InvalidInput(
            f"dataset {data.id} has label {data.num_classes - 1} but teacher "
            f"{teacher.id} has {teacher.num_classes} classes (labels 0..{teacher.num_classes - 1})",
            field=field,
            code="labels_out_of_range",
        )


def _labeled(field: str, data: Dataset, why: str) -> None:
    if not data.labeled:
        raise InvalidInput(
            f"dataset {data.id} has no labels; {why}", field=field, code="labels_required"
        )


def _ready(session: Session, teacher_id: str, tenant: str, field: str, what: str) -> TeacherView:
    teacher = session.get(Teacher, teacher_id)
    if teacher is None or teacher.tenant_id != tenant:
        raise InvalidInput(f"no {what} with id {teacher_id!r}", field=field, code="unknown_id")
    if teacher.status != "ready":
        raise InvalidInput(
            f"{what} {teacher.id} is {teacher.status}, not ready"
            + (": wait until a worker has inspected it" if teacher.status == "processing" else ""),
            field=field,
            code="teacher_not_ready",
        )
    return TeacherView.of(teacher)


def _teachers(session: Session, spec: JobSpec, tenant: str) -> TeacherView:
    """The job's teacher, or the first of several whose members all match it."""
    first: TeacherView | None = None
    several = spec.teachers.kind != "single"
    for i, teacher_id in enumerate(spec.teachers.ids):
        field = f"{spec.teacher_field}.{i}" if several else spec.teacher_field
        teacher = _ready(session, teacher_id, tenant, field, "teacher")
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


def _same_shape(
    session: Session, spec: JobSpec, teacher: TeacherView, train: Dataset, tenant: str
) -> None:
    assert spec.cross_domain is not None
    phi = spec.cross_domain.phi
    if list(train.feature_shape) != list(teacher.input_shape):
        raise InvalidInput(
            f"phi {phi!r} keeps the input's shape, but the target data {train.id} has shape "
            f"{train.feature_shape} and teacher {teacher.id} takes {teacher.input_shape}; "
            "use phi 'onnx' or 'vae' to map between shapes",
            field="cross_domain.phi",
            code="shape_mismatch",
        )
    if phi == "dilated_conv" and len(train.feature_shape) not in (1, 2, 3):
        raise InvalidInput(
            f"a convolution maps rows shaped (L,), (C, L) or (C, H, W), not {train.feature_shape}",
            field="cross_domain.phi",
        )


def _onnx_mapping(
    session: Session, spec: JobSpec, teacher: TeacherView, train: Dataset, tenant: str
) -> None:
    assert isinstance(spec.cross_domain, OnnxPhi)
    field = "cross_domain.mapping_id"
    mapping = session.get(Teacher, spec.cross_domain.mapping_id)
    if mapping is None or mapping.tenant_id != tenant:
        raise InvalidInput(
            f"no uploaded model with id {spec.cross_domain.mapping_id!r}",
            field=field,
            code="unknown_id",
        )
    if mapping.format != "onnx" or mapping.status != "ready":
        raise InvalidInput(
            f"model {mapping.id} is {mapping.format} ({mapping.status}); a mapping must be a "
            "ready ONNX model",
            field=field,
        )
    if list(mapping.input_shape or []) != list(train.feature_shape):
        raise InvalidInput(
            f"mapping {mapping.id} takes input shape {mapping.input_shape} but the target data "
            f"{train.id} has shape {train.feature_shape}",
            field=field,
            code="shape_mismatch",
        )
    # The upload records a [batch, k] output's width as num_classes.
    wanted = math.prod(teacher.input_shape)
    if mapping.num_classes != wanted:
        raise InvalidInput(
            f"mapping {mapping.id} outputs {mapping.num_classes} values per row but teacher "
            f"{teacher.id} takes input shape {teacher.input_shape} ({wanted} values); the "
            "mapping's output must be the teacher's input",
            field=field,
            code="shape_mismatch",
        )


def _vae_datasets(
    session: Session, spec: JobSpec, teacher: TeacherView, train: Dataset, tenant: str
) -> None:
    assert isinstance(spec.cross_domain, VaePhi)
    cross = spec.cross_domain
    source = dataset(session, "cross_domain.source_dataset_id", cross.source_dataset_id, tenant)
    if list(source.feature_shape) != list(teacher.input_shape):
        raise InvalidInput(
            f"source dataset {source.id} has shape {source.feature_shape} but teacher "
            f"{teacher.id} takes {teacher.input_shape}",
            field="cross_domain.source_dataset_id",
            code="shape_mismatch",
        )
    field = "cross_domain.target_dataset_id" if cross.target_dataset_id else "train_dataset_id"
    target = (
        dataset(session, field, cross.target_dataset_id, tenant)
        if cross.target_dataset_id
        else train
    )
    if list(target.feature_shape) != list(train.feature_shape):
        raise InvalidInput(
            f"target dataset {target.id} has shape {target.feature_shape} but the training "
            f"data {train.id} has {train.feature_shape}",
            field=field,
            code="shape_mismatch",
        )
    for name, data in (("cross_domain.source_dataset_id", source), (field, target)):
        _labeled(name, data, "the VAE pairs rows of the two domains by class")
    unpaired = sorted(set(target.class_counts or {}) - set(source.class_counts or {}))
    if unpaired:
        raise InvalidInput(
            f"classes {', '.join(unpaired)} of the target data have no rows in source dataset "
            f"{source.id} to pair with",
            field="cross_domain.source_dataset_id",
            code="classes_unpaired",
        )


PhiCheck = Callable[[Session, JobSpec, TeacherView, Dataset, str], None]
PHI_CHECKS: dict[type[Any], PhiCheck] = {
    IdentityPhi: _same_shape,
    GaussianNoisePhi: _same_shape,
    DilatedConvPhi: _same_shape,
    OnnxPhi: _onnx_mapping,
    VaePhi: _vae_datasets,
}


def _through_phi(session: Session, spec: JobSpec, teacher: TeacherView, tenant: str) -> TeacherView:
    if spec.cross_domain is None:
        return teacher
    train = dataset(session, "train_dataset_id", spec.train_dataset_id, tenant)
    PHI_CHECKS[type(spec.cross_domain)](session, spec, teacher, train, tenant)
    return replace(teacher, input_shape=list(train.feature_shape))


def _datasets(session: Session, spec: JobSpec, teacher: TeacherView, tenant: str) -> Dataset:
    train = dataset(session, "train_dataset_id", spec.train_dataset_id, tenant)
    _matches_teacher("train_dataset_id", train, teacher)
    if train.rows < 1:
        raise InvalidInput("the training dataset is empty", field="train_dataset_id")
    if not train.labeled and spec.method.alpha > 0:
        raise InvalidInput(
            f"dataset {train.id} has no labels but method.alpha = {spec.method.alpha} weighs a "
            "hard-label term; upload labels or set method.alpha to 0 (pure distillation)",
            field="train_dataset_id",
            code="labels_required",
        )
    for field, dataset_id in (
        ("validation_dataset_id", spec.validation_dataset_id),
        ("test_dataset_id", spec.test_dataset_id),
    ):
        if dataset_id is not None:
            held_out = dataset(session, field, dataset_id, tenant)
            _matches_teacher(field, held_out, teacher)
            _labeled(field, held_out, "held-out data is scored against labels")
    return train


def _splittable(spec: JobSpec, train: Dataset) -> None:
    if spec.validation_dataset_id is not None and spec.test_dataset_id is not None:
        return
    if train.rows < MIN_ROWS_FOR_SPLIT:
        raise InvalidInput(
            f"dataset {train.id} has {train.rows} rows: too few to hold out validation and test "
            f"rows (at least {MIN_ROWS_FOR_SPLIT}); upload more rows or give "
            "validation_dataset_id and test_dataset_id",
            field="train_dataset_id",
        )
    rare = [k for k, n in (train.class_counts or {}).items() if n < 3] if train.labeled else []
    if rare:
        raise InvalidInput(
            f"classes {', '.join(sorted(rare))} have fewer than 3 rows in dataset {train.id}, "
            "too few to split into train, validation and test; add rows or give "
            "validation_dataset_id and test_dataset_id",
            field="train_dataset_id",
        )


def _transfer(
    session: Session, spec: JobSpec, teacher: TeacherView, train: Dataset, tenant: str
) -> None:
    for i, dataset_id in enumerate(spec.transfer_dataset_ids):
        field = f"transfer_dataset_ids.{i}"
        found = dataset(session, field, dataset_id, tenant)
        _matches_teacher(field, found, teacher, labels_matter=False)
    if not isinstance(spec.transfer, TransferConfig):
        return
    if "vae" in spec.transfer.methods and not isinstance(spec.cross_domain, VaePhi):
        raise InvalidInput(
            "'vae' synthesis decodes new inputs with the VAE that a cross-domain job trains; "
            "set cross_domain.phi to 'vae' (with cross_domain.source_dataset_id), or "
            "synthesize with 'mixup', 'noise' or 'shift'",
            field="transfer.synthesize",
            code="vae_required",
        )


def _method(spec: JobSpec, teacher: TeacherView, train: Dataset) -> None:
    """The student and the method's own fields agree with the teacher and the data."""
    if spec.student.architecture == "cnn" and len(teacher.input_shape) not in (2, 3):
        raise InvalidInput(
            f"a cnn student needs inputs shaped (C, H, W) or (C, L); teacher {teacher.id} takes "
            f"{teacher.input_shape}: use architecture 'mlp'",
            field="student.architecture",
        )
    _assistants(spec)
    _hint(spec, teacher)
    stop = spec.method.kd_stop_epoch
    if stop is not None and stop > spec.training.epochs:
        raise InvalidInput(
            f"kd_stop_epoch {stop} is past the last epoch ({spec.training.epochs})",
            field="method.kd_stop_epoch",
        )
    if stop is not None and not train.labeled:
        raise InvalidInput(
            "after kd_stop_epoch only hard labels train the student, and the training "
            f"dataset {train.id} has none",
            field="method.kd_stop_epoch",
            code="labels_required",
        )
    if spec.training.jitter_pixels and len(teacher.input_shape) < 2:
        raise InvalidInput(
            f"jitter shifts images; teacher {teacher.id} takes flat inputs "
            f"{teacher.input_shape}: set training.jitter_pixels to 0",
            field="training.jitter_pixels",
        )


def _hint(spec: JobSpec, teacher: TeacherView) -> None:
    hint = spec.method.hint
    if hint is None:
        return
    if spec.teachers.kind != "single":
        raise InvalidInput(
            "a hint names a tensor of one teacher; it cannot be used with several teachers",
            field="method.hint",
        )
    if hint.teacher_output not in teacher.hint_candidates:
        shown = ", ".join(teacher.hint_candidates[:20]) or "none (hints need an ONNX teacher)"
        raise InvalidInput(
            f"teacher {teacher.id} has no intermediate tensor {hint.teacher_output!r}; "
            f"candidates: {shown}",
            field="method.hint.teacher_output",
        )


def _assistants(spec: JobSpec) -> None:
    assistants, architecture = spec.assistants, spec.student.architecture
    if assistants is None:
        return
    if assistants.hidden_sizes is not None and architecture != "mlp":
        raise InvalidInput(
            "assistants.hidden_sizes sizes mlp assistants; this student is a cnn: give "
            "assistants.channels",
            field="assistants.hidden_sizes",
        )
    if assistants.channels is not None and architecture != "cnn":
        raise InvalidInput(
            "assistants.channels sizes cnn assistants; this student is an mlp: give "
            "assistants.hidden_sizes",
            field="assistants.channels",
        )


def _search(spec: JobSpec) -> None:
    if spec.search is None:
        return
    if spec.assistants is not None or spec.teachers.kind == "checkpoints":
        what = "assistants" if spec.assistants is not None else "teacher_checkpoint_ids"
        raise InvalidInput(
            f"search trains KD candidates from one teacher (or an ensemble); it does not "
            f"combine with {what}: remove one of the two",
            field="search",
            code="search_unsupported",
        )


def _limits(session: Session, spec: JobSpec, tenant: str, settings: Settings) -> None:
    limit = spec.training.time_limit_seconds
    if limit is not None and limit > settings.job_time_limit_seconds:
        raise InvalidInput(
            f"at most {settings.job_time_limit_seconds} s on this server",
            field="training.time_limit_seconds",
        )
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant, Job.status.in_([s.value for s in ACTIVE]))
    )
    if (active or 0) >= settings.max_active_jobs_per_tenant:
        raise TooManyRequests(
            f"this tenant has {active} jobs queued or running, the most this server allows; "
            "submit again when one has finished",
            retry_after=30,
            code="too_many_active_jobs",
        )


def validate_submission(
    session: Session, spec: JobSpec, tenant: str, settings: Settings
) -> TeacherView:
    """Every check that needs no training, in the order a user would fix them."""
    teacher = _through_phi(session, spec, _teachers(session, spec, tenant), tenant)
    train = _datasets(session, spec, teacher, tenant)
    _splittable(spec, train)
    _transfer(session, spec, teacher, train, tenant)
    check_text_job(spec, teacher)
    _method(spec, teacher, train)
    _search(spec)
    check_job_memory(session, spec, teacher, settings)
    if spec.resources.gpu:
        workers.require_gpu_worker(session, settings)
    _limits(session, spec, tenant, settings)
    return teacher
