"""Jobs: submit, poll, list, cancel, and download what they produced."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import finite_json, idempotency
from app.auth import TenantDep
from app.bounds import INT64_MAX
from app.db import session_scope
from app.deps import SessionDep, SettingsDep
from app.errors import PROBLEM_RESPONSES, InvalidInput, NotFound
from app.failpoints import failpoint
from app.idempotency import IdempotencyKeyHeader, request_digest
from app.jobs.events import event_public, events_after
from app.jobs.live import LIVE, mark_changed
from app.jobs.public_view import job_json, jobs_page_json
from app.jobs.schemas import ArtifactPublic, JobEventPublic, JobPublic
from app.jobs.service import create_job, job_public
from app.jobs.spec import JobCreate
from app.jobs.state import TERMINAL, JobStatus, request_cancel
from app.models import Artifact, Blob, Job, new_id
from app.outbox import publish_pending
from app.ownership import owned
from app.pagination import Page
from app.security_headers import ARTIFACT_POLICY
from app.storage import iter_blob

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
STREAM_POLL_SECONDS = 0.5
# Event ids are 64-bit integers in the database: a cursor past them is refused, not sent on.
EventCursor = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description="id of the last event seen")
]


def _job(session: SessionDep, job_id: str, tenant: str) -> Job:
    return owned(session, Job, job_id, tenant, "job_id")


@router.post("", status_code=201, response_model=JobPublic, responses=PROBLEM_RESPONSES)
def submit_job(
    body: JobCreate,
    tenant: TenantDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> dict[str, Any]:
    """Queue a job. The job and its message are committed together (an outbox), so a job
    that was answered 201 runs even if the API or the broker fails right after."""
    digest = request_digest(body.model_dump(mode="json"))
    job_id = new_id("job")
    try:
        with session_scope() as session:
            if idempotency_key is not None:
                first = idempotency.find(session, tenant, "jobs", idempotency_key, digest)
                if first is not None:
                    return _replay(response, session, first, tenant)
                idempotency.claim(session, tenant, "jobs", idempotency_key, digest, job_id)
            create_job(session, body, tenant, settings, job_id)
            mark_changed(session, tenant, job_id)  # the tenant's pages have a new job
    except idempotency.KeyTaken:
        first = idempotency.winner(tenant, "jobs", idempotency_key or "", digest)
        with session_scope() as session:
            return _replay(response, session, first, tenant)
    failpoint("after_job_commit")
    try:
        publish_pending(job_id=job_id)
    except Exception:
        # The message stays in the outbox; every worker's relay sends it later.
        log.warning("broker unreachable; job %s will be published from the outbox", job_id)
    with session_scope() as session:
        return job_public(_job(session, job_id, tenant))


def _replay(response: Response, session: Session, job_id: str, tenant: str) -> dict[str, Any]:
    response.headers["Idempotent-Replayed"] = "true"
    return job_public(_job(session, job_id, tenant))


@router.get("/{job_id}", response_model=JobPublic, responses=PROBLEM_RESPONSES)
async def get_job(job_id: str, tenant: TenantDep) -> Response:
    # The most polled route: answered from LIVE while the job has not changed (no query, no
    # worker thread: app/jobs/live.py); else rendered once per version of the row
    # (app/jobs/public_view.py) in one trip to a worker thread.
    body = LIVE.job(job_id, tenant)
    if body is None:
        body = await run_in_threadpool(_job_json, job_id, tenant)
    return Response(body, media_type="application/json")


def _job_json(job_id: str, tenant: str) -> bytes:
    with session_scope() as session:
        return job_json(session, job_id, tenant)


def _page_json(tenant: str, limit: int, after: str | None, status: JobStatus | None) -> bytes:
    with session_scope() as session:
        return jobs_page_json(session, tenant, limit, after, status)


@router.get("", response_model=Page[JobPublic], responses=PROBLEM_RESPONSES)
async def list_jobs(
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[
        str | None, Query(description="id of the last job of the previous page")
    ] = None,
    status: Annotated[
        JobStatus | None,
        Query(description="only jobs in this state"),
    ] = None,
) -> Response:
    page = LIVE.page(tenant, (limit, after, status))  # as get_job
    if page is None:
        page = await run_in_threadpool(_page_json, tenant, limit, after, status)
    return Response(page, media_type="application/json")


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=PROBLEM_RESPONSES)
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    _job(session, job_id, tenant)
    request_cancel(session, job_id)
    mark_changed(session, tenant, job_id)
    session.flush()
    session.expire_all()
    return job_public(_job(session, job_id, tenant))


@router.get("/{job_id}/events", response_model=Page[JobEventPublic], responses=PROBLEM_RESPONSES)
def list_events(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    after: EventCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The job's events, oldest first: state changes, messages (stages), per-epoch metrics."""
    _job(session, job_id, tenant)
    rows = events_after(session, job_id, after, limit + 1)
    data = [event_public(e) for e in rows[:limit]]
    more = len(rows) > limit
    return {"data": data, "has_more": more, "next_after": str(data[-1]["id"]) if more else None}


@router.get(
    "/{job_id}/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **PROBLEM_RESPONSES},
)
def stream_events(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    after: EventCursor = None,
    last_event_id: Annotated[
        str | None,
        Header(
            pattern=r"^[0-9]{1,19}$",
            description="The last event id received (an SSE reconnect): a 64-bit event id.",
        ),
    ] = None,
) -> StreamingResponse:
    """The same events as server-sent events, until the job has ended. Resumes after
    `Last-Event-ID` (or `after`)."""
    _job(session, job_id, tenant)
    if last_event_id is not None:
        after = int(last_event_id)
        if after > INT64_MAX:
            raise InvalidInput(
                f"{last_event_id} is past the largest event id ({INT64_MAX})",
                field="last-event-id",
            )
    return StreamingResponse(
        _event_stream(job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_stream(job_id: str, after: int | None) -> Iterator[str]:
    last_sent = time.monotonic()
    while True:
        with session_scope() as session:
            events = events_after(session, job_id, after, 500)
            job = session.get(Job, job_id)
            ended = job is None or job.status in TERMINAL
        for event in events:
            after = event.id
            body = finite_json.dumps(event_public(event), default=str)
            yield f"id: {event.id}\nevent: {event.type}\ndata: {body}\n\n"
            last_sent = time.monotonic()
        if ended and not events:
            return
        if time.monotonic() - last_sent > 15:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if not events:
            time.sleep(STREAM_POLL_SECONDS)


@router.get("/{job_id}/artifacts", response_model=Page[ArtifactPublic], responses=PROBLEM_RESPONSES)
def list_artifacts(
    job_id: str, session: SessionDep, request: Request, tenant: TenantDep
) -> dict[str, Any]:
    _job(session, job_id, tenant)
    rows = session.scalars(
        select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
    ).all()
    data = [
        {
            "name": a.name,
            "media_type": a.media_type,
            "bytes": a.bytes,
            "sha256": a.sha256,
            "created_at": a.created_at,
            "url": str(request.url_for("download_artifact", job_id=job_id, name=a.name)),
        }
        for a in rows
    ]
    return {"data": data, "has_more": False, "next_after": None}


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The artifact's bytes (student.onnx, metrics.json, report.html, ...)",
            "content": {"application/octet-stream": {}, "application/json": {}, "text/html": {}},
        },
        **PROBLEM_RESPONSES,
    },
)
def download_artifact(
    job_id: str, name: str, session: SessionDep, tenant: TenantDep
) -> StreamingResponse:
    _job(session, job_id, tenant)
    artifact = session.get(Artifact, (job_id, name))
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact named {name!r}", field="name")
    blob = session.get(Blob, artifact.blob_id)
    if blob is None:
        raise NotFound(f"the bytes of artifact {name!r} are missing", field="name")
    return StreamingResponse(
        iter_blob(blob.id, blob.chunk_count),
        media_type=artifact.media_type,
        headers={
            "Content-Length": str(blob.size),
            "Content-Disposition": f'attachment; filename="{name}"',
            "ETag": f'"{artifact.sha256}"',
            "Content-Security-Policy": ARTIFACT_POLICY,
        },
    )
