"""Claiming a job, the first thing its task does: queued -> running under a new lease.

Torch-free on purpose: the claim is made the moment the message arrives, before the pool
child has imported (or finished warming up) the engine."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from app.settings import get_settings
from worker.lease import Heartbeat, Lease


class ClaimFailed(Exception):
    """The database could not be reached to claim the job (after the claim's own retries):
    nothing was written, and the task may simply try again later."""


def claim(job_id: str) -> Lease | None:
    """The job's new lease, or None when it is not queued any more (a duplicate delivery, or
    a job that runs elsewhere, ended or was cancelled)."""
    try:
        return Lease.claim(job_id)
    except DBAPIError as exc:
        raise ClaimFailed(f"could not claim {job_id}: {type(exc.orig).__name__}") from exc


def start_heartbeat(lease: Lease) -> Heartbeat:
    """Renew the lease from the moment of the claim: whatever the job does next (wait for the
    warm-up, import torch, load its inputs), it is never silent long enough to be requeued."""
    heartbeat = Heartbeat(lease, get_settings())
    heartbeat.start()
    return heartbeat
