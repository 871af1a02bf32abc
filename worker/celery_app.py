"""The worker's Celery app: `celery -A worker.celery_app worker`. No torch at import time."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from app.observability import configure_logging
from app.queue import get_celery
from app.settings import get_settings

celery = get_celery()
celery.conf.include = ["worker.tasks"]
app = celery


@setup_logging.connect
def _json_logs(**_: Any) -> None:
    # Connected, so Celery leaves logging to us: JSON lines with the job id when there is one.
    configure_logging(get_settings().log_level)
