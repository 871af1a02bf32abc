"""The worker's Celery app: `celery -A worker.celery_app worker`. No torch at import time."""

from __future__ import annotations

from app.queue import get_celery

celery = get_celery()
celery.conf.include = ["worker.tasks"]
app = celery
