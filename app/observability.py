"""Metrics for Prometheus, JSON logs carrying job ids, and readiness of what we depend on."""

from __future__ import annotations

import contextvars
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func, select, text
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import workers
from app.db import get_sessionmaker
from app.jobs.live import LIVE
from app.jobs.state import JobStatus
from app.models import Job
from app.settings import Settings

JOB_STATES = tuple(JobStatus)
# Jobs run from seconds (a small tabular student) to hours (a CNN on images).
JOB_DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 3 * 3600.0)
log = logging.getLogger(__name__)
current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


# What every LogRecord has; anything else on a record came from `extra=` and is logged too.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id when there is one, and
    the fields passed as `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or current_job.get()
        if job_id:
            entry["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn() from libraries: JSON lines too
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def adopt_library_logging(prefix: str = "torch") -> None:
    """torch installs glog-style handlers of its own when imported: route its records through
    the JSON handler instead (call after the import)."""
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logger = logging.getLogger(name)
            if logger.handlers:
                logger.handlers[:] = []
            logger.propagate = True


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


def _duration_seconds(session: Session) -> ColumnElement[Any]:
    """finished_at - started_at in seconds, in SQL: PostgreSQL and SQLite differ."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", Job.finished_at - Job.started_at)
    return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0


class JobCollector(Collector):
    """Jobs by state, queue depth and job durations, read from the database at scrape time.

    Two aggregate queries per scrape, whatever the number of jobs: no rows are loaded.
    """

    def _read(self) -> tuple[dict[str, int], Any]:
        with get_sessionmaker()() as session:
            counts = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            seconds = _duration_seconds(session)
            columns: list[ColumnElement[Any]] = [
                func.count(),
                func.coalesce(func.sum(seconds), 0.0),
            ] + [
                func.coalesce(func.sum(case((seconds <= bound, 1), else_=0)), 0)
                for bound in JOB_DURATION_BUCKETS
            ]
            finished = session.execute(
                select(*columns).where(
                    Job.status == "succeeded",
                    Job.started_at.is_not(None),
                    Job.finished_at.is_not(None),
                )
            ).one()
        return counts, finished

    def collect(self) -> Iterator[Any]:
        try:
            counts, finished = self._read()
        except Exception:
            # The HTTP metrics are still worth a scrape while the database is down.
            log.warning("could not read job metrics from the database", exc_info=True)
            yield GaugeMetricFamily(
                "distillery_database_up", "1 when the job metrics could be read.", value=0
            )
            return
        yield GaugeMetricFamily(
            "distillery_database_up", "1 when the job metrics could be read.", value=1
        )
        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by state.", labels=["status"])
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "distillery_queue_depth", "Jobs waiting for a worker.", value=counts.get("queued", 0)
        )
        count, total, *cumulative = finished
        buckets = [
            (f"{b:g}", int(n)) for b, n in zip(JOB_DURATION_BUCKETS, cumulative, strict=True)
        ]
        yield HistogramMetricFamily(
            "distillery_job_duration_seconds",
            "Wall time of succeeded jobs, started to finished.",
            buckets=[*buckets, ("+Inf", int(count))],
            sum_value=float(total),
        )


class AnswerCollector(Collector):
    """How this process answered polls of jobs: from what it keeps, or by a query."""

    def collect(self) -> Iterator[Any]:
        answers = CounterMetricFamily(
            "distillery_job_answers",
            "Answers to GET /v1/jobs and /v1/jobs/{id} by source: live (kept since the job's "
            "last change, no query) or database.",
            labels=["source"],
        )
        for source, count in LIVE.answered.items():
            answers.add_metric([source], count)
        yield answers


registry = CollectorRegistry()
registry.register(JobCollector())
registry.register(AnswerCollector())
HTTP_LATENCY = Histogram(
    "distillery_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["method", "route", "status"],
    registry=registry,
)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        root_path = scope.get("root_path", "")

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            template = _route_template(scope, root_path)
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


def _route_template(scope: Scope, root_path: str) -> str:
    """The matched route's template, never the raw path: label values stay few."""
    route_path = getattr(scope.get("route"), "path", None)
    if route_path:
        return str(route_path)
    mounted = str(scope.get("root_path", ""))
    if mounted != root_path:  # a Mount (static files) matched: it extends root_path
        return f"{mounted[len(root_path) :]}/{{path}}"
    return "unmatched"


def _unserved(session: Session, settings: Settings, queues: list[str]) -> str:
    parts = []
    for queue in queues:
        seen = workers.last_seen(session, queue)
        what = (
            "uploads stay processing"
            if queue == settings.inspection_queue_name
            else ("jobs stay queued")
        )
        when = f"last seen {seen}" if seen else "never seen"
        parts.append(f"no worker serves queue {queue!r} ({when}): {what} until one runs")
    return "; ".join(parts)


def readiness(settings: Settings) -> dict[str, str]:
    """What is down, by name; empty when the database and the broker both answer."""
    down: dict[str, str] = {}
    try:
        with get_sessionmaker()() as session:
            session.execute(text("SELECT 1"))
            unserved = workers.unserved_queues(session, settings)
            if unserved:
                down["workers"] = _unserved(session, settings, unserved)
    except Exception as exc:
        down["database"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if settings.embedded_broker:
        for name in ("queue", "processed", "control"):
            folder = settings.broker_folder / name
            try:
                # A file of its own per probe: concurrent probes never collide.
                with tempfile.NamedTemporaryFile(dir=folder, prefix=".ready-"):
                    pass
            except OSError as exc:
                down["broker"] = f"the broker folder {folder} is not writable: {exc}"
                break
    else:
        from kombu.connection import Connection

        broker: Any = Connection  # kombu is untyped
        try:
            with broker(settings.resolved_broker_url, connect_timeout=2) as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            down["broker"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return down
