"""The HTTP API. It never imports torch and never deserialises an uploaded model."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import __version__, dashboard
from app.datasets import routes as datasets
from app.errors import (
    PROBLEM_RESPONSES,
    ServiceUnavailable,
    install_error_handlers,
    problem_response,
)
from app.jobs import routes as jobs
from app.jobs.live import Listener
from app.observability import MetricsMiddleware, configure_logging, readiness, registry
from app.ratelimit import RateLimitMiddleware, make_limiter
from app.security_headers import NoSniffMiddleware
from app.settings import get_settings
from app.teachers import routes as teachers
from app.uploads import UploadLimitMiddleware

DESCRIPTION = """
Upload a teacher model and data, distill a small student, download it as ONNX with a report.

Errors are `application/problem+json`: `detail` says what to fix and `errors` names each field.

**Convention:** in `method.alpha`, alpha weighs the *hard-label* term:
`L = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)`.
"""


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    settings.ensure_dirs()
    # On Postgres, polls of unchanged jobs are answered without a query (app/jobs/live.py).
    listener = None
    if settings.resolved_database_url.startswith("postgresql"):
        listener = Listener(settings.resolved_database_url)
        listener.start()
    try:
        yield
    finally:
        if listener is not None:
            listener.stop()


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    api = FastAPI(
        title="Distillery", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    api.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    # Outside the upload limit, so a client over its rate is refused before its body is read.
    api.add_middleware(
        RateLimitMiddleware,
        limiter=make_limiter(
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
            settings.broker_url,
            # One deployment, one database: its API processes share buckets; another
            # deployment on the same Redis does not.
            hashlib.sha256(settings.resolved_database_url.encode()).hexdigest()[:16],
        ),
    )
    api.add_middleware(MetricsMiddleware)
    api.add_middleware(NoSniffMiddleware)
    install_error_handlers(api)
    api.include_router(teachers.router)
    api.include_router(datasets.router)
    api.include_router(jobs.router)
    api.include_router(dashboard.router)
    api.mount("/dashboard/static", dashboard.static_files, name="dashboard-static")

    @api.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get(
        "/readyz",
        tags=["health"],
        responses={503: PROBLEM_RESPONSES[422] | {"description": "A dependency is down"}},
    )
    def readyz() -> Response:
        """The database and the broker both answer."""
        down = readiness(settings)
        if down:
            detail = "; ".join(f"{name}: {why}" for name, why in down.items())
            return problem_response(ServiceUnavailable(f"not ready: {detail}").to_problem())
        return JSONResponse({"status": "ready"})

    @api.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> Response:
        """Prometheus metrics: jobs by state, queue depth, job durations, HTTP latency."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api


app = create_app()
