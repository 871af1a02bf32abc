"""Metrics for Prometheus, JSON logs carrying job ids, and readiness of what we depend on."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import get_sessionmaker
from app.models import Job
from app.settings import Settings

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id when there is one."""

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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


class JobCollector(Collector):
    """Jobs by state, queue depth and job durations, read from the database at scrape time."""

    def collect(self) -> Iterator[Any]:
        with get_sessionmaker()() as session:
            counts = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            finished = session.execute(
                select(Job.started_at, Job.finished_at).where(
                    Job.status == "succeeded", Job.started_at.is_not(None)
                )
            ).all()
        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by state.", labels=["status"])
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "distillery_queue_depth", "Jobs waiting for a worker.", value=counts.get("queued", 0)
        )
        seconds = [(end - start).total_seconds() for start, end in finished if end and start]
        yield SummaryMetricFamily(
            "distillery_job_duration_seconds",
            "Wall time of succeeded jobs, start to finish.",
            count_value=len(seconds),
            sum_value=sum(seconds),
        )


registry = CollectorRegistry()
registry.register(JobCollector())
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

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


def readiness(settings: Settings) -> dict[str, str]:
    """What is down, by name; empty when the database and the broker both answer."""
    down: dict[str, str] = {}
    try:
        with get_sessionmaker()() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        down["database"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    if settings.embedded_broker:
        queue = settings.broker_folder / "queue"
        probe = queue / ".ready"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            down["broker"] = f"the broker folder {queue} is not writable: {exc}"
    else:
        from kombu import Connection

        try:
            with Connection(settings.resolved_broker_url, connect_timeout=2) as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception as exc:
            down["broker"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return down
