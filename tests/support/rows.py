"""Rows made directly in a session, for service-level tests of the rules on them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.jobs.spec import JobCreate
from app.models import Blob, Dataset, Job, Teacher, new_id

TENANT = "acme"


def blob(session: Session) -> Blob:
    row = Blob(id=new_id("blob"), sha256="0" * 64, size=0, chunk_count=0)
    session.add(row)
    session.flush()
    return row


def teacher(session: Session, **fields: Any) -> Teacher:
    values: dict[str, Any] = {
        "id": new_id("tch"),
        "tenant_id": TENANT,
        "filename": "teacher.onnx",
        "status": "ready",
        "format": "onnx",
        "sha256": "0" * 64,
        "bytes": 1,
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "parameters": 30_000,
        "output_name": "logits",
        "output_kind": "logits",
        "inspection": {"hint_candidates": ["relu"]},
        **fields,
    }
    row = Teacher(blob_id=blob(session).id, **values)
    session.add(row)
    session.flush()
    return row


def dataset(session: Session, **fields: Any) -> Dataset:
    values: dict[str, Any] = {
        "id": new_id("ds"),
        "tenant_id": TENANT,
        "filename": "train.npz",
        "format": "npz",
        "sha256": "0" * 64,
        "bytes": 1,
        "rows": 300,
        "feature_shape": [1, 8, 8],
        "num_classes": 10,
        "labeled": True,
        "class_counts": {str(c): 30 for c in range(10)},
        **fields,
    }
    row = Dataset(blob_id=blob(session).id, **values)
    session.add(row)
    session.flush()
    return row


def job_body(teacher_row: Teacher, train: Dataset, **fields: Any) -> JobCreate:
    return JobCreate.model_validate(
        {"teacher_id": teacher_row.id, "train_dataset_id": train.id, **fields}
    )


def job(session: Session, **fields: Any) -> Job:
    """A queued job of a ready teacher and a dataset, inserted as the API would."""
    from app.jobs import state

    spec = job_body(teacher(session), dataset(session)).to_spec()
    row = Job(
        id=new_id("job"),
        tenant_id=TENANT,
        spec=spec.model_dump(mode="json"),
        cancel_requested=False,
        time_limit_seconds=3600,
        **fields,
    )
    state.submitted(session, row)
    return row
