"""A worker's lease on a job: the claim, the heartbeat, and fenced writes.

Postgres is the source of truth. Claiming a job bumps its `lease_token`; every write the worker
makes afterwards runs in a transaction that first renews the heartbeat *where the token is
still its own* (and holds the row lock until commit). A worker that lost the lease (it stalled
past the lease timeout and the reaper requeued the job, or another worker claimed it) finds no
row and raises LeaseLost: nothing it writes lands. Transient database errors (a connection the
server terminated) are retried."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from psycopg.errors import IdleInTransactionSessionTimeout
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from app.db import session_scope
from app.jobs.state import JobStatus, move
from app.models import Job, TrainingCheckpoint, utcnow
from app.settings import Settings
from worker.engine.errors import JobFailure

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 6


class LeaseLost(Exception):
    """Another worker owns the job now; this one must stop without writing."""


class JobCancelled(Exception):
    pass


class TimeLimitExceeded(JobFailure):
    code = "time_limit_exceeded"

    def __init__(self) -> None:
        super().__init__(
            "the job ran past its time limit; "
            "ask for fewer epochs or a larger training.time_limit_seconds"
        )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def retrying(fn: Callable[[], T], what: str) -> T:
    """Run fn, again after a transient database error (connection lost, server restart)."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except DBAPIError as exc:
            transient = (
                isinstance(exc, OperationalError)
                or exc.connection_invalidated
                # The server ended a transaction this process left idle (it was stopped):
                # the retry's fence tells whether the lease is still ours.
                or isinstance(exc.orig, IdleInTransactionSessionTimeout)
            )
            if not transient or attempt == RETRIES - 1:
                raise
            log.warning("database error while %s (%s); retrying", what, type(exc.orig).__name__)
            time.sleep(min(0.2 * 2**attempt, 3.0))
    raise AssertionError("unreachable")


class Lease:
    def __init__(self, job_id: str, token: int, owner: str, attempt: int = 1) -> None:
        self.job_id, self.token, self.owner, self.attempt = job_id, token, owner, attempt

    @classmethod
    def claim(cls, job_id: str) -> Lease | None:
        """queued -> running with a new token, atomically. A second delivery of the message
        (or a message for a job another worker runs) finds no queued row and gets None."""
        owner = worker_name()

        def attempt() -> Lease | None:
            with session_scope() as session:
                now = utcnow()
                claimed = move(
                    session,
                    job_id,
                    JobStatus.RUNNING,
                    f"running on {owner}",
                    where=(Job.cancel_requested.is_(False),),
                    values={
                        "lease_token": Job.lease_token + 1,
                        "heartbeat_at": now,
                        "attempts": Job.attempts + 1,
                        "worker": owner,
                        "started_at": func.coalesce(Job.started_at, now),
                    },
                    data={"worker": owner},
                )
                if not claimed:
                    return None
                token, attempts = session.execute(
                    select(Job.lease_token, Job.attempts).where(Job.id == job_id)
                ).one()
                return cls(job_id, int(token), owner, int(attempts))

        return retrying(attempt, "claiming a job")

    def fence(self, session: Session) -> None:
        """Renew the heartbeat if the lease is still ours, else LeaseLost. Locks the row."""
        renewed = session.execute(
            update(Job)
            .where(
                Job.id == self.job_id,
                Job.lease_token == self.token,
                Job.status == JobStatus.RUNNING,
            )
            .values(heartbeat_at=utcnow())
        )
        if not _rowcount(renewed):
            raise LeaseLost(f"job {self.job_id}: lease {self.token} is no longer held")

    def write(self, fn: Callable[[Session], T], what: str = "writing") -> T:
        """fn(session) in one transaction that commits only while the lease is ours."""

        def attempt() -> T:
            with session_scope() as session:
                self.fence(session)
                return fn(session)

        return retrying(attempt, what)


class DatabaseCheckpoints:
    """The engine's CheckpointStore: one row per training run of the job, replaced every epoch
    in a fenced transaction (a stale worker cannot overwrite a newer attempt's checkpoint)."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def load(self, run: str) -> bytes | None:
        def attempt() -> bytes | None:
            with session_scope() as session:
                row = session.get(TrainingCheckpoint, (self.lease.job_id, run))
                return bytes(row.data) if row is not None else None

        return retrying(attempt, "reading a checkpoint")

    def save(self, run: str, epoch: int, data: bytes) -> None:
        def put(session: Session) -> None:
            session.merge(
                TrainingCheckpoint(
                    job_id=self.lease.job_id,
                    run=run,
                    epoch=epoch,
                    lease_token=self.lease.token,
                    data=data,
                    created_at=utcnow(),
                )
            )

        self.lease.write(put, "saving a checkpoint")


class Heartbeat(threading.Thread):
    """Renews the lease every heartbeat_seconds and learns, from the same row, whether the job
    was cancelled or ran out of time. The training loop calls check() before every step."""

    def __init__(self, lease: Lease, settings: Settings) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.lease, self.settings = lease, settings
        self.stopped = threading.Event()
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.timed_out = threading.Event()
        self.last_renewal = time.monotonic()

    def beat(self) -> None:
        with session_scope() as session:
            self.lease.fence(session)
            row = session.execute(
                select(Job.cancel_requested, Job.started_at, Job.time_limit_seconds).where(
                    Job.id == self.lease.job_id
                )
            ).one()
        self.last_renewal = time.monotonic()
        cancel, started, limit = row
        if cancel:
            self.cancelled.set()
        if limit and started and _seconds_since(started) > limit:
            self.timed_out.set()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
            except LeaseLost:
                log.warning("lease on job %s lost; stopping", self.lease.job_id)
                self.lost.set()
                return
            except Exception as exc:  # database unreachable: keep trying until the lease expires
                silent = time.monotonic() - self.last_renewal
                log.warning("heartbeat failed (%s); %.0f s without renewal", exc, silent)
                if silent > self.settings.lease_timeout_seconds:
                    self.lost.set()
                    return

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"job {self.lease.job_id}: lease lost")
        if self.cancelled.is_set():
            raise JobCancelled()
        if self.timed_out.is_set():
            raise TimeLimitExceeded()

    def stop(self) -> None:
        self.stopped.set()


def _seconds_since(moment: datetime) -> float:
    return (utcnow() - moment).total_seconds()
