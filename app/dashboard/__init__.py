"""The web dashboard: static pages that call the public REST API (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.security_headers import dashboard_policy

STATIC = Path(__file__).parent / "static"
PAGES = {"index": STATIC / "index.html", "job": STATIC / "job.html", "new": STATIC / "new.html"}
POLICY = {"Content-Security-Policy": dashboard_policy(list(PAGES.values()))}
router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=STATIC)


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/dashboard/")
def jobs_page() -> FileResponse:
    return FileResponse(PAGES["index"], headers=POLICY)


@router.get("/dashboard/job")
def job_page() -> FileResponse:
    return FileResponse(PAGES["job"], headers=POLICY)


@router.get("/dashboard/new")
def new_page() -> FileResponse:
    return FileResponse(PAGES["new"], headers=POLICY)
