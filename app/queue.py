"""The Celery app both sides share. A message only wakes a worker; the database holds the job."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.settings import Settings, get_settings

RUN_JOB_TASK = "distillery.run_job"
INSPECT_TEACHER_TASK = "distillery.inspect_teacher"


def make_celery(settings: Settings) -> Celery:
    celery = Celery("distillery", broker=settings.resolved_broker_url)
    celery.conf.update(
        task_default_queue=settings.queue_name,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Jobs run in pool children, never in the parent (which never touches torch or
        # CUDA). A child warms up once and runs up to jobs_per_child jobs; one that grew past
        # job_child_max_memory_mb is replaced after its job.
        worker_max_tasks_per_child=settings.jobs_per_child,
        worker_max_memory_per_child=settings.job_child_max_memory_mb * 1024,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
    )
    if settings.embedded_broker:
        queue = str(settings.broker_folder / "queue")
        celery.conf.broker_transport_options = {
            "data_folder_in": queue,
            "data_folder_out": queue,
            "processed_folder": str(settings.broker_folder / "processed"),
            "control_folder": str(settings.broker_folder / "control"),
            "store_processed": False,
            # The filesystem transport lists its folder for new messages; it defaults to
            # once a second, which a small job's user would wait for.
            "polling_interval": settings.embedded_broker_poll_seconds,
        }
    else:
        # Redis redelivers a message that is still unacked after the visibility timeout. The
        # message only wakes a worker (the lease in the database decides who runs the job), so
        # a redelivery while the job runs finds the live lease and leaves; set the timeout past
        # the longest a job may run, so that redeliveries are rare.
        celery.conf.broker_transport_options = {
            "visibility_timeout": settings.job_time_limit_seconds
            + 2 * settings.lease_timeout_seconds
        }
    return celery


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def publish_job(job_id: str, gpu: bool = False) -> None:
    """Wake a worker for the job: on the GPU queue, which GPU workers serve, when it asks
    for a GPU (resources.gpu)."""
    settings = get_settings()
    get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=settings.job_queue(gpu))


def publish_inspection(teacher_id: str) -> None:
    settings = get_settings()
    get_celery().send_task(
        INSPECT_TEACHER_TASK, args=[teacher_id], queue=settings.inspection_queue_name
    )
