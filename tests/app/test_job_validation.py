"""Submission rules on real Postgres, one rolled-back transaction per test: each refusal
names the request field and a code."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from app.errors import InvalidInput, TooManyRequests
from app.jobs.service import create_job
from app.jobs.validation import validate_submission
from app.models import Dataset, Teacher
from app.settings import Settings
from tests.support import rows
from tests.support.rows import TENANT

SETTINGS = Settings(max_active_jobs_per_tenant=2, job_time_limit_seconds=3600)


def _refused(session: Session, teacher: Teacher, train: Dataset, **fields: Any) -> InvalidInput:
    spec = rows.job_body(teacher, train, **fields).to_spec()
    with pytest.raises(InvalidInput) as caught:
        validate_submission(session, spec, TENANT, SETTINGS)
    return caught.value


def test_a_good_submission_passes(db: Session) -> None:
    teacher, train = rows.teacher(db), rows.dataset(db)
    view = validate_submission(db, rows.job_body(teacher, train).to_spec(), TENANT, SETTINGS)
    assert view.id == teacher.id and view.input_shape == [1, 8, 8]


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"teacher_id": "tch_missing"}, "teacher_id", "unknown_id"),
        ({"teacher_ids": ["@teacher", "tch_missing"]}, "teacher_ids.1", "unknown_id"),
        ({"validation_dataset_id": "ds_missing"}, "validation_dataset_id", "unknown_id"),
        (
            {"student": {"architecture": "cnn"}, "@flat": True},
            "student.architecture",
            "invalid_input",
        ),
        ({"method": {"kd_stop_epoch": 30}}, "method.kd_stop_epoch", "invalid_input"),
        (
            {"method": {"hint": {"teacher_output": "nope"}}},
            "method.hint.teacher_output",
            "invalid_input",
        ),
        (
            {"training": {"time_limit_seconds": 7200}},
            "training.time_limit_seconds",
            "invalid_input",
        ),
        ({"transfer": {"synthesize": "vae"}}, "transfer.synthesize", "vae_required"),
        (
            {"cross_domain": {"phi": "onnx", "mapping_id": "tch_missing"}},
            "cross_domain.mapping_id",
            "unknown_id",
        ),
        ({"assistants": {"channels": [[8]]}}, "assistants.channels", "invalid_input"),
        (
            {"student": {"init_embeddings": "teacher"}},
            "student.init_embeddings",
            "invalid_input",
        ),
    ],
)
def test_refusals_name_the_field_and_the_code(
    db: Session, fields: dict[str, Any], field: str, code: str
) -> None:
    flat = fields.pop("@flat", False)
    shape = [64] if flat else [1, 8, 8]
    teacher = rows.teacher(db, input_shape=shape)
    train = rows.dataset(db, feature_shape=shape)
    if "teacher_ids" in fields:
        fields["teacher_ids"] = [teacher.id, *fields["teacher_ids"][1:]]
        fields["teacher_id"] = None
    body = {"teacher_id": teacher.id, **fields}
    refused = _refused(db, teacher, train, **body)
    assert (refused.field, refused.code) == (field, code), refused.detail


def test_shapes_and_labels_must_match_the_teacher(db: Session) -> None:
    teacher = rows.teacher(db)
    wide = rows.dataset(db, feature_shape=[64])
    refused = _refused(db, teacher, wide)
    assert (refused.field, refused.code) == ("train_dataset_id", "shape_mismatch")
    too_many = rows.dataset(db, num_classes=12, class_counts={str(c): 30 for c in range(12)})
    refused = _refused(db, teacher, too_many)
    assert (refused.field, refused.code) == ("train_dataset_id", "labels_out_of_range")
    unlabeled = rows.dataset(db, labeled=False, num_classes=None, class_counts=None)
    refused = _refused(db, teacher, unlabeled)
    assert (refused.field, refused.code) == ("train_dataset_id", "labels_required")
    assert validate_submission(
        db, rows.job_body(teacher, unlabeled, method={"alpha": 0}).to_spec(), TENANT, SETTINGS
    )


def test_ensemble_members_must_agree(db: Session) -> None:
    first, other = rows.teacher(db), rows.teacher(db, num_classes=3)
    train = rows.dataset(db)
    refused = _refused(db, first, train, teacher_id=None, teacher_ids=[first.id, other.id])
    assert (refused.field, refused.code) == ("teacher_ids.1", "shape_mismatch")


def test_a_teacher_not_ready_is_refused(db: Session) -> None:
    teacher, train = rows.teacher(db, status="processing"), rows.dataset(db)
    refused = _refused(db, teacher, train)
    assert (refused.field, refused.code) == ("teacher_id", "teacher_not_ready")


def test_another_tenants_rows_are_unknown(db: Session) -> None:
    teacher = rows.teacher(db, tenant_id="someone-else")
    refused = _refused(db, teacher, rows.dataset(db))
    assert (refused.field, refused.code) == ("teacher_id", "unknown_id")


def test_the_active_job_quota(db: Session) -> None:
    teacher, train = rows.teacher(db), rows.dataset(db)
    body = rows.job_body(teacher, train)
    for _ in range(SETTINGS.max_active_jobs_per_tenant):
        create_job(db, body, TENANT, SETTINGS)
    with pytest.raises(TooManyRequests) as caught:
        create_job(db, body, TENANT, SETTINGS)
    assert caught.value.code == "too_many_active_jobs" and caught.value.retry_after > 0
