"""Teachers: upload a model (stored as a blob, inspected by a worker), look them up."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app import idempotency
from app.auth import TenantDep
from app.db import session_scope
from app.deps import SessionDep, SettingsDep
from app.errors import PROBLEM_RESPONSES
from app.filenames import display_filename
from app.idempotency import IdempotencyKeyHeader, request_digest
from app.models import Teacher, new_id
from app.outbox import publish_pending
from app.ownership import owned
from app.pagination import Page, newest_first
from app.settings import Settings
from app.teachers.schemas import TeacherPublic
from app.teachers.service import accept_upload, answered, refused
from app.uploads import received_file

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/teachers", tags=["teachers"])


def _store(
    tenant: str,
    settings: Settings,
    file: UploadFile,
    idempotency_key: str | None,
) -> tuple[str, bool]:
    """The upload in one transaction: blob, processing teacher, inspection message. Returns
    the teacher's id, and whether an earlier request with this Idempotency-Key made it."""
    filename = display_filename(file.filename, "teacher")
    with received_file(file, settings.tmp_dir, settings.blob_chunk_bytes) as received:
        digest = request_digest(file.filename, received.sha256)
        teacher_id = new_id("tch")
        try:
            with session_scope() as session:
                if idempotency_key is not None:
                    first = idempotency.find(session, tenant, "teachers", idempotency_key, digest)
                    if first is not None:
                        return owned(session, Teacher, first, tenant, "teacher_id").id, True
                    idempotency.claim(
                        session, tenant, "teachers", idempotency_key, digest, teacher_id
                    )
                accept_upload(session, tenant, filename, received, settings, teacher_id)
        except idempotency.KeyTaken:
            first = idempotency.winner(tenant, "teachers", idempotency_key or "", digest)
            return first, True
    try:
        publish_pending(teacher_id=teacher_id)
    except Exception:
        # The message stays in the outbox; every worker's relay sends it later.
        log.warning("broker unreachable; teacher %s will be inspected from the outbox", teacher_id)
    return teacher_id, False


@router.post("", status_code=201, response_model=TeacherPublic, responses=PROBLEM_RESPONSES)
async def upload_teacher(
    tenant: TenantDep,
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
    """Store the model and have a worker inspect it. The answer waits for the inspection
    (up to DISTILLERY_UPLOAD_WAIT_SECONDS): `ready`, a 422 saying why the file cannot serve
    as a teacher, or, if no worker has answered yet, `processing` (poll GET /v1/teachers/{id})."""
    teacher_id, replayed = await run_in_threadpool(_store, tenant, settings, file, idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    teacher = await answered(teacher_id, settings.upload_wait_seconds)
    if teacher.status == "invalid":
        raise refused(teacher)
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
