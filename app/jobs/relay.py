"""The relay every worker runs beside its jobs: it publishes the outbox, expires the leases of
workers that stopped heartbeating (requeueing their jobs, or failing them after too many
attempts), and sends again the messages of jobs that have waited too long (a broker that lost
them)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import workers
from app.db import session_scope
from app.jobs.state import JobStatus, fail, move
from app.models import Job, utcnow
from app.outbox import enqueue, publish_pending, republish_stale
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Relayed:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)
    published: int = 0


def _expire(session: Session, job: Job, settings: Settings, done: Relayed) -> None:
    """A running job whose worker went silent: a new lease token (whatever the silent worker
    still writes is refused), then cancelled, failed or queued again."""
    silent = f"worker {job.worker} stopped heartbeating at {job.heartbeat_at:%H:%M:%S}"
    token, bumped = job.lease_token, {"lease_token": job.lease_token + 1}
    if job.cancel_requested:
        move(
            session,
            job.id,
            JobStatus.CANCELLED,
            f"cancelled ({silent})",
            token=token,
            values=bumped,
        )
        done.cancelled.append(job.id)
    elif job.attempts >= settings.max_attempts:
        message = f"{silent}; gave up after {job.attempts} attempts"
        fail(session, job.id, "worker_lost", message, token=token)
        done.failed.append(job.id)
    elif move(
        session,
        job.id,
        JobStatus.QUEUED,
        f"requeued: {silent} (attempt {job.attempts} of {settings.max_attempts})",
        token=token,
        values=bumped,
        data={"reason": "heartbeat_lost", "attempts": job.attempts},
    ):
        enqueue(session, job.id)
        done.requeued.append(job.id)
    log.warning("lease of job %s expired: %s", job.id, silent)


def expire_leases(session: Session, settings: Settings) -> Relayed:
    """Requeue, fail or cancel the running jobs whose heartbeat is older than the lease
    timeout, and queue a new message for jobs whose message a broker may have lost."""
    done = Relayed()
    cutoff = utcnow() - timedelta(seconds=settings.lease_timeout_seconds)
    query = select(Job).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    for job in list(session.scalars(query)):
        _expire(session, job, settings, done)
    done.republished = republish_stale(session, settings.republish_after_seconds)
    return done


def relay(settings: Settings, worker: tuple[str, str] | None = None) -> Relayed:
    """One pass: say this worker pool (name, queue) is alive, expire silent leases and
    re-send stale messages (one transaction), then publish the outbox."""
    with session_scope() as session:
        if worker is not None:
            workers.seen(session, *worker)
        done = expire_leases(session, settings)
    done.published = publish_pending()
    return done


class RelayLoop(threading.Thread):
    """Runs relay() every reaper_interval_seconds until stopped; survives database and broker
    outages (it logs and tries again)."""

    def __init__(self, settings: Settings, worker: tuple[str, str] | None = None) -> None:
        super().__init__(name="distillery-relay", daemon=True)
        self.settings, self.worker = settings, worker
        self.stopped = threading.Event()

    def run(self) -> None:
        # A first pass at once: the pool is seen alive as soon as it is ready.
        while True:
            try:
                relay(self.settings, self.worker)
            except Exception:
                log.exception("relay pass failed; trying again")
            if self.stopped.wait(self.settings.reaper_interval_seconds):
                return

    def stop(self) -> None:
        self.stopped.set()
