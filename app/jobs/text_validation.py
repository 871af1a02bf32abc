"""Submission checks of text jobs: a text teacher reads text datasets only, with labels it
knows (class ids in range, or names among its classes), and trains text students with text
synthesis. What text jobs do not do yet is refused here, naming the field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import InvalidInput
from app.jobs.spec import JobSpec, TransferConfig
from app.models import Dataset

if TYPE_CHECKING:
    from app.jobs.validation import TeacherView

TEXT_STUDENTS = ("bag", "text_cnn", "bilstm", "transformer")
TEXT_SYNTHESIS = ("mask", "ngram", "swap")


def matches_text_teacher(
    field: str, data: Dataset, teacher: TeacherView, labels_matter: bool
) -> None:
    if data.modality != "text":
        raise InvalidInput(
            f"teacher {teacher.id} reads text; dataset {data.id} holds tensors: upload a CSV, "
            "JSONL or Parquet file with a text column",
            field=field,
            code="modality_mismatch",
        )
    if not labels_matter or not data.labeled:
        return
    if data.class_names:
        unknown = [n for n in data.class_names if n not in teacher.class_names]
        if unknown:
            raise InvalidInput(
                f"dataset {data.id} has labels the teacher does not know: {unknown[:10]}; "
                f"teacher {teacher.id}'s classes are {teacher.class_names[:20]}",
                field=field,
                code="labels_unknown",
            )
    elif data.num_classes is not None and data.num_classes > teacher.num_classes:
        raise InvalidInput(
            f"dataset {data.id} has label {data.num_classes - 1} but teacher {teacher.id} has "
            f"{teacher.num_classes} classes",
            field=field,
            code="labels_out_of_range",
        )


def tensor_data_for_tensor_teacher(field: str, data: Dataset, teacher: TeacherView) -> None:
    if data.modality == "text":
        raise InvalidInput(
            f"dataset {data.id} holds text but teacher {teacher.id} reads tensors "
            f"{teacher.input_shape}: upload a text classifier (a zip of its model folder)",
            field=field,
            code="modality_mismatch",
        )


def check_text_job(spec: JobSpec, teacher: TeacherView) -> None:
    """Student, method and transfer fields that only one modality has."""
    text = teacher.modality == "text"
    student = spec.student
    if text and student.architecture in ("mlp", "cnn") and not student.sized_from_teacher:
        raise InvalidInput(
            f"teacher {teacher.id} reads text: choose a text student ({', '.join(TEXT_STUDENTS)}), "
            "or leave the student unset for a bilstm",
            field="student.architecture",
        )
    if not text and student.architecture in TEXT_STUDENTS:
        raise InvalidInput(
            f"a {student.architecture} student reads text; teacher {teacher.id} reads tensors",
            field="student.architecture",
        )
    if not text and student.init_embeddings == "teacher":
        raise InvalidInput(
            f"init_embeddings 'teacher' starts a text student from a text teacher's word "
            f"embeddings; teacher {teacher.id} reads tensors: leave it 'random'",
            field="student.init_embeddings",
        )
    if isinstance(spec.transfer, TransferConfig):
        methods = set(spec.transfer.methods)
        wrong = methods - set(TEXT_SYNTHESIS) if text else methods & set(TEXT_SYNTHESIS)
        if wrong:
            allowed = "mask, ngram, swap" if text else "mixup, noise, shift (vae)"
            raise InvalidInput(
                f"{sorted(wrong)} synthesis does not apply to this teacher's inputs; use {allowed}",
                field="transfer.synthesize",
            )
    if not text:
        return
    for field, given in (
        ("cross_domain", spec.cross_domain is not None),
        ("method.hint", spec.method.hint is not None),
        ("assistants", spec.assistants is not None),
        ("training.jitter_pixels", spec.training.jitter_pixels > 0),
    ):
        if given:
            raise InvalidInput(
                f"{field} is not available for text teachers yet",
                field=field,
                code="text_unsupported",
            )
