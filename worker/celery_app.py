"""The worker's Celery app: `celery -A worker.celery_app worker`. No torch at import time."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from app.db import get_engine
from app.jobs.relay import RelayLoop
from app.observability import configure_logging
from app.queue import get_celery
from app.settings import get_settings
from worker.lease import worker_name
from worker.warmup import WARM_UP_SECONDS, warm_up_child

# JSON logs from the start: Celery warns (e.g. about running as root) before setup_logging.
configure_logging(get_settings().log_level)
celery = get_celery()
celery.conf.include = ["worker.tasks"]
# A job pool child warms up as it starts (worker/warmup.py): seconds, not Celery's default 4.
celery.conf.worker_proc_alive_timeout = WARM_UP_SECONDS
app = celery


def _json_logs(**_: Any) -> None:
    # Connected, so Celery leaves logging to us: JSON lines with the job id when there is one.
    configure_logging(get_settings().log_level)


_relays: list[RelayLoop] = []


def _served_queue(sender: Any) -> str:
    """The queue this worker consumes (its --queues), from Celery's own selection."""
    settings = get_settings()
    selected = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    names = sorted(getattr(selected, "consume_from", None) or [])
    return names[0] if names else settings.queue_name


def _start_relay(sender: Any = None, **_: Any) -> None:
    # The worker runs with --quiet (Celery's banner is not a log line): say what it serves here.
    settings = get_settings()
    queue = _served_queue(sender)
    inspections = queue == settings.inspection_queue_name
    gpu = queue == settings.resolved_gpu_queue_name
    hostname = str(getattr(sender, "hostname", None) or worker_name())
    logging.getLogger("worker").info(
        "worker ready",
        extra={
            "hostname": hostname,
            "queue": queue,
            "pool": "inspections" if inspections else "gpu jobs" if gpu else "jobs",
            "concurrency": (
                settings.inspect_concurrency if inspections else settings.worker_concurrency
            ),
            "broker": "filesystem" if settings.embedded_broker else "redis",
        },
    )
    # In the worker's parent process, beside the pool: say it is alive, publish the outbox,
    # requeue jobs whose worker died, resend messages a broker lost. Every worker pool runs
    # one; they share by row locks.
    loop = RelayLoop(settings, worker=(hostname, queue))
    loop.start()
    _relays.append(loop)


def _stop_relay(**_: Any) -> None:
    for loop in _relays:
        loop.stop()


def _consumed() -> set[str]:
    return set(getattr(celery.amqp.queues, "consume_from", None) or {})


def _serves_jobs() -> bool:
    """Whether this process's pool consumes a job queue (not the inspection queue)."""
    settings = get_settings()
    return bool(_consumed() & {settings.queue_name, settings.resolved_gpu_queue_name})


def _child_started(**_: Any) -> None:
    # A pool child is forked from the parent, whose relay holds database
    # connections: drop the inherited ones (without closing the parent's) and open our own.
    get_engine().dispose(close=False)
    if _serves_jobs():
        # Before this child takes its first job (worker/warmup.py).
        warm_up_child(gpu_queue=get_settings().resolved_gpu_queue_name in _consumed())


# Connected by call, not as decorators: Celery's signals are untyped.
setup_logging.connect(_json_logs)
worker_ready.connect(_start_relay)
worker_shutdown.connect(_stop_relay)
worker_process_init.connect(_child_started)
