"""The maintenance loop every worker runs beside its jobs: publish the outbox, requeue jobs
whose worker stopped heartbeating (or fail them after too many attempts), and send again the
messages of jobs that have waited too long (a broker that lost them)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from app.db import session_scope
from app.events import record_event
from app.models import Job, utcnow
from app.outbox import enqueue, publish_pending, republish_stale_queued
from app.queue import publish_job
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)
    published: int = 0


def reap(settings: Settings) -> Reaped:
    done = Reaped()
    cutoff = utcnow() - timedelta(seconds=settings.lease_timeout_seconds)
    with session_scope() as session:
        query = select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for job in session.scalars(query):
            # A new token: whatever the silent worker still writes is refused.
            job.lease_token += 1
            silent = f"worker {job.worker} stopped heartbeating at {job.heartbeat_at:%H:%M:%S}"
            if job.cancel_requested:
                job.status, job.stage, job.finished_at = "cancelled", "cancelled", utcnow()
                record_event(
                    session, job.id, "state", f"cancelled ({silent})", {"status": "cancelled"}
                )
                done.cancelled.append(job.id)
            elif job.attempts >= settings.max_attempts:
                message = f"{silent}; gave up after {job.attempts} attempts"
                job.status, job.stage, job.finished_at = "failed", "failed", utcnow()
                job.error_code, job.error_message = "worker_lost", message
                record_event(
                    session,
                    job.id,
                    "state",
                    f"failed: {message}",
                    {"status": "failed", "error": {"code": "worker_lost", "message": message}},
                )
                done.failed.append(job.id)
            else:
                job.status, job.stage = "queued", "queued"
                record_event(
                    session,
                    job.id,
                    "state",
                    f"requeued: {silent} (attempt {job.attempts} of {settings.max_attempts})",
                    {"status": "queued", "reason": "heartbeat_lost", "attempts": job.attempts},
                )
                enqueue(session, job.id)
                done.requeued.append(job.id)
            log.warning("reaped job %s: %s", job.id, job.status)
        done.republished = republish_stale_queued(session, settings.republish_after_seconds)
    done.published = publish_pending(publish_job)
    return done


class MaintenanceLoop(threading.Thread):
    """Runs reap() every reaper_interval_seconds until stopped; survives database and broker
    outages (it logs and tries again)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="distillery-maintenance", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reaper_interval_seconds):
            try:
                reap(self.settings)
            except Exception:
                log.exception("maintenance pass failed; trying again")

    def stop(self) -> None:
        self.stopped.set()
