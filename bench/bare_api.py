"""The baseline of bench/api.py: a bare FastAPI plus SQLAlchemy app that selects the same job
rows from the same table, served by the same uvicorn setup as `distillery api`.

    DATABASE_URL=postgresql+psycopg://... PORT=8123 python bench/bare_api.py

No authentication, no rate limit, no middleware, no response model: what a request costs
beyond the database, as cheaply as FastAPI and SQLAlchemy do it."""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.models import Job

engine = create_engine(os.environ["DATABASE_URL"], pool_size=10, max_overflow=20)
TENANT = os.environ.get("TENANT", "local")
app = FastAPI()


def _row(job: Job) -> dict[str, Any]:
    return {c.key: getattr(job, c.key) for c in Job.__table__.columns}


@app.get("/v1/jobs/{job_id}")
def get_job(job_id: str) -> dict[str, Any]:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        if job is None or job.tenant_id != TENANT:
            raise HTTPException(404)
        return _row(job)


@app.get("/v1/jobs")
def list_jobs(limit: int = 20) -> dict[str, Any]:
    with Session(engine) as session:
        rows = session.scalars(
            select(Job)
            .where(Job.tenant_id == TENANT)
            .order_by(Job.created_at.desc(), Job.id.desc())
            .limit(limit)
        ).all()
        return {"data": [_row(j) for j in rows]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="info")
