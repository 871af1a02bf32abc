"""The public JSON of jobs, served from a cache of each row's last rendering.

A client polls its job about once a second, and a dashboard lists twenty jobs as often. Each
answer would otherwise parse the row's spec and metrics documents, validate them into
JobPublic and serialise it again, though the row has not changed since the last answer. So each
API process keeps the JSON it last rendered for a job, with the row's version:

- on Postgres, the row's `xmin` (the transaction that wrote this version of the row: every
  UPDATE makes a new one), read in the same query as the row's small columns;
- elsewhere (SQLite), only ended jobs are cached, by their end state and time: nothing writes
  to a job row once it has ended.

The lookup reads the row's small columns (with the version) and loads the spec and metrics
documents only when it renders, so an unchanged job costs one narrow query. The tenant check
and the 404 are the same as without the cache."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, Text, and_, cast, literal_column, select
from sqlalchemy.orm import Session, defer

from app.errors import NotFound
from app.finite_json import finite_or_null
from app.jobs.live import LIVE
from app.jobs.schemas import JobPublic
from app.jobs.service import job_public_fields
from app.jobs.state import TERMINAL
from app.models import Job
from app.ownership import possible_id
from app.pagination import before

CACHED_JOBS = 20_000


class RenderedJobs:
    """job id -> (row version, JSON): the least recently used beyond `size` are dropped."""

    def __init__(self, size: int = CACHED_JOBS) -> None:
        self.size = size
        self.found: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.lock = threading.Lock()  # sync routes run in a pool of threads

    def get(self, job_id: str, version: str | None) -> bytes | None:
        if version is None:
            return None
        with self.lock:
            hit = self.found.get(job_id)
            if hit is None or hit[0] != version:
                return None
            self.found.move_to_end(job_id)
            return hit[1]

    def put(self, job_id: str, version: str | None, body: bytes) -> None:
        if version is None:
            return
        with self.lock:
            self.found[job_id] = (version, body)
            self.found.move_to_end(job_id)
            while len(self.found) > self.size:
                self.found.popitem(last=False)


RENDERED = RenderedJobs()


def _versioned(session: Session, documents: bool = False) -> Select[Any]:
    """Jobs, each with its row version where the database has one; without their two
    documents (spec, metrics) unless asked, and then the metrics as the text stored."""
    postgres = session.get_bind().dialect.name == "postgresql"
    version: Any = literal_column("jobs.xmin::text" if postgres else "NULL")
    if documents:
        return select(Job, version, cast(Job.metrics, Text)).options(defer(Job.metrics))
    query: Select[Any] = select(Job, version)
    return query.options(defer(Job.spec), defer(Job.metrics))


def render(job: Job, metrics: str | None) -> bytes:
    """JobPublic's JSON of a row whose metrics document is given as stored. A job that has
    not ended carries its curves so far (JobProgress, written by its worker as strict JSON,
    growing with every epoch): they are spliced in as stored, not parsed and validated again
    at every change; an ended job's metrics are validated, once (it does not change again)."""
    fields = job_public_fields(job)
    if metrics is None or job.status in TERMINAL:
        found = finite_or_null(json.loads(metrics)) if metrics is not None else None
        return JobPublic.model_validate({**fields, "metrics": found}).model_dump_json().encode()
    body = JobPublic.model_validate(fields).model_dump_json().encode()
    # The first "metrics":null is the field's own: the fields before it are an id, words
    # and numbers, and a quote inside a JSON string is escaped.
    return body.replace(b'"metrics":null', b'"metrics":' + metrics.encode(), 1)


def _version(job: Job, xmin: str | None) -> str | None:
    if xmin is not None:
        return xmin
    if job.status in TERMINAL:
        return f"{job.status}@{job.finished_at}"
    return None


def _rendered(session: Session, rows: Sequence[Any]) -> list[bytes]:
    """Each (job, xmin) row's JSON: cached, or rendered from the whole row read again in one
    statement for every job that changed (one statement: under READ COMMITTED, a second one
    could see a newer version of the row than the first, and mix the two)."""
    found: list[bytes | None] = [RENDERED.get(job.id, _version(job, xmin)) for job, xmin in rows]
    changed = [job.id for (job, _), body in zip(rows, found, strict=True) if body is None]
    if changed:
        fresh = (
            _versioned(session, documents=True)
            .where(Job.id.in_(changed))
            .execution_options(populate_existing=True)
        )
        position = {job.id: i for i, (job, _) in enumerate(rows)}
        for job, xmin, metrics in session.execute(fresh):
            body = render(job, metrics)
            RENDERED.put(job.id, _version(job, xmin), body)
            found[position[job.id]] = body
    # A job deleted between the two statements is left out.
    return [body for body in found if body is not None]


def job_json(session: Session, job_id: str, tenant: str) -> bytes:
    """GET /v1/jobs/{id}: the job's JSON, or NotFound naming `job_id`. Kept in LIVE
    (app/jobs/live.py) until the job changes."""
    token = LIVE.token()
    found = None
    if possible_id(job_id):
        found = session.execute(_versioned(session).where(Job.id == job_id)).first()
    bodies = _rendered(session, [found]) if found and found[0].tenant_id == tenant else []
    if not bodies:
        raise NotFound(f"no job with id {job_id!r}", field="job_id")
    LIVE.keep_job(token, job_id, tenant, bodies[0])
    return bodies[0]


def jobs_page_json(
    session: Session, tenant: str, limit: int, after: str | None, status: str | None
) -> bytes:
    """GET /v1/jobs: a newest-first page (app/pagination.py's cursor) as JSON. Kept in LIVE
    until a job of the tenant changes or a new one arrives."""
    token = LIVE.token()
    page = _page_json(session, tenant, limit, after, status)
    LIVE.keep_page(token, tenant, (limit, after, status), page)
    return page


def _page_json(
    session: Session, tenant: str, limit: int, after: str | None, status: str | None
) -> bytes:
    where = Job.tenant_id == tenant
    if status:
        where = and_(where, Job.status == status)
    query = _versioned(session).where(where)
    if after is not None:
        query = query.where(before(session, Job, after))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    rows = session.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    tail = {"has_more": more, "next_after": rows[-1][0].id if more else None}
    # Page[JobPublic]'s fields, in its order: object, data, has_more, next_after.
    return (
        b'{"object":"list","data":['
        + b",".join(_rendered(session, rows))
        + b"],"
        + json.dumps(tail, separators=(",", ":")).encode()[1:]
    )
