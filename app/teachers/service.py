"""Uploading a teacher: its bytes become a blob and a `processing` teacher whose inspection
message is in the outbox of the same transaction; a worker answers `ready` or `invalid`."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.orm import Session

from app.db import session_scope
from app.errors import InvalidInput
from app.models import Teacher, new_id
from app.outbox import enqueue_inspection
from app.settings import Settings
from app.storage import FileDigest, store_file

POLL_SECONDS = (0.05, 0.1, 0.2, 0.4)  # quick answers first, then a gentle pace


def accept_upload(
    session: Session,
    tenant: str,
    filename: str,
    received: FileDigest,
    settings: Settings,
    teacher_id: str | None = None,
) -> Teacher:
    blob = store_file(session, received.path, settings.blob_chunk_bytes)
    teacher = Teacher(
        id=teacher_id or new_id("tch"),
        tenant_id=tenant,
        filename=filename,
        status="processing",
        blob_id=blob.id,
        sha256=received.sha256,
        bytes=received.bytes,
    )
    session.add(teacher)
    session.flush()
    enqueue_inspection(session, teacher.id)
    return teacher


def _read(teacher_id: str) -> Teacher:
    with session_scope() as session:
        teacher = session.get(Teacher, teacher_id)
        assert teacher is not None
        session.expunge(teacher)
        return teacher


async def answered(teacher_id: str, wait_seconds: float) -> Teacher:
    """The teacher once a worker has inspected it, or still processing after wait_seconds."""
    deadline = time.monotonic() + wait_seconds
    for attempt in range(10**9):
        teacher = await asyncio.to_thread(_read, teacher_id)
        left = deadline - time.monotonic()
        if teacher.status != "processing" or left <= 0:
            return teacher
        await asyncio.sleep(min(POLL_SECONDS[min(attempt, len(POLL_SECONDS) - 1)], left))
    raise AssertionError("unreachable")


def refused(teacher: Teacher) -> InvalidInput:
    """An upload a worker found invalid, as the 422 the upload answers."""
    return InvalidInput(
        f"{teacher.error_message} (teacher {teacher.id})",
        field="file",
        code=teacher.error_code or "teacher_invalid",
    )
