"""The web dashboard: static pages that call the public REST API (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=STATIC)


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/")
def jobs_page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/dashboard/job")
def job_page() -> FileResponse:
    return FileResponse(STATIC / "job.html")


@router.get("/dashboard/new")
def new_page() -> FileResponse:
    return FileResponse(STATIC / "new.html")
