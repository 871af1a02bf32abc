"""Teachers: upload a model, inspected in a subprocess, stored as a blob."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Response, UploadFile

from app import idempotency
from app.api.deps import SessionDep, SettingsDep
from app.auth import TenantDep
from app.errors import PROBLEM_RESPONSES
from app.filenames import display_filename
from app.idempotency import IdempotencyKeyHeader, request_digest
from app.inspection import inspect_teacher_file
from app.models import Teacher, new_id
from app.ownership import owned
from app.pagination import newest_first
from app.schemas import Page, TeacherPublic
from app.storage import store_file
from app.uploads import received_file

router = APIRouter(prefix="/v1/teachers", tags=["teachers"])


@router.post("", status_code=201, response_model=TeacherPublic, responses=PROBLEM_RESPONSES)
def upload_teacher(
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile,
        File(
            description="An ONNX model, or a PyTorch program saved with torch.export.save "
            "(.pt2). Pickles (torch.save) and bare state dicts are refused."
        ),
    ],
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Teacher:
    with received_file(file, settings.tmp_dir, settings.blob_chunk_bytes) as received:
        digest = request_digest(file.filename, received.sha256)
        if idempotency_key is not None:
            first = idempotency.find(session, tenant, "teachers", idempotency_key, digest)
            if first is not None:
                response.headers["Idempotent-Replayed"] = "true"
                return owned(session, Teacher, first, tenant, "teacher_id")
        found = inspect_teacher_file(received.path, settings.inspect_timeout_seconds)
        blob = store_file(session, received.path, settings.blob_chunk_bytes)
    teacher_id = new_id("tch")
    if idempotency_key is not None:
        try:
            idempotency.claim(session, tenant, "teachers", idempotency_key, digest, teacher_id)
        except idempotency.KeyTaken:
            session.rollback()
            first = idempotency.winner(tenant, "teachers", idempotency_key, digest)
            response.headers["Idempotent-Replayed"] = "true"
            return owned(session, Teacher, first, tenant, "teacher_id")
    teacher = Teacher(
        id=teacher_id,
        tenant_id=tenant,
        filename=display_filename(file.filename, "teacher"),
        status="ready",
        format=found["format"],
        blob_id=blob.id,
        sha256=received.sha256,
        bytes=received.bytes,
        input_shape=list(found["input_shape"]),
        num_classes=int(found["num_classes"]),
        parameters=int(found["parameters"]),
        output_name=str(found["output_name"]),
        output_kind=found["output_kind"],
        inspection=found,
    )
    session.add(teacher)
    session.flush()
    return teacher


@router.get("/{teacher_id}", response_model=TeacherPublic, responses=PROBLEM_RESPONSES)
def get_teacher(teacher_id: str, session: SessionDep, tenant: TenantDep) -> Teacher:
    return owned(session, Teacher, teacher_id, tenant, "teacher_id")


@router.get("", response_model=Page[TeacherPublic], responses=PROBLEM_RESPONSES)
def list_teachers(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: str | None = None,
) -> dict[str, Any]:
    return newest_first(session, Teacher, limit, after, Teacher.tenant_id == tenant)
