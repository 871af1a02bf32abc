"""The HTTP API. It never imports torch and never deserialises an uploaded model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api import datasets, jobs, teachers
from app.errors import install_error_handlers
from app.settings import get_settings
from app.uploads import UploadLimitMiddleware

DESCRIPTION = """
Upload a teacher model and data, distill a small student, download it as ONNX with a report.

Errors are `application/problem+json`: `detail` says what to fix and `errors` names each field.

**Convention:** in `method.alpha`, alpha weighs the *hard-label* term:
`L = alpha * CE(y, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)`.
"""


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    get_settings().ensure_dirs()
    yield


def create_app() -> FastAPI:
    settings = get_settings()
    api = FastAPI(
        title="Distillery", version=__version__, description=DESCRIPTION, lifespan=lifespan
    )
    api.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    install_error_handlers(api)
    api.include_router(teachers.router)
    api.include_router(datasets.router)
    api.include_router(jobs.router)

    @api.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return api


app = create_app()
