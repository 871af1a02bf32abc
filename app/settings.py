"""The one settings object. Nothing else in Distillery reads the environment."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DISTILLERY_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    data_dir: Path = Field(
        default=Path(".distillery"),
        description="Local folder for the embedded database, broker queue, temp files and cache.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL. Empty: embedded SQLite file in data_dir. "
        "Production: postgresql+psycopg://user:pass@host:5432/db",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker URL. Empty: embedded filesystem broker in data_dir. "
        "Production: redis://host:6379/0",
    )
    embedded_broker_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="How often the embedded broker's workers look in its folder for a new "
        "message (one directory listing; Redis pushes instead).",
    )
    queue_name: str = Field(default="distillery", description="Celery queue that jobs go to.")
    gpu_queue_name: str = Field(
        default="",
        description="Celery queue of the jobs that ask for a GPU (resources.gpu), which GPU "
        "workers (`distillery worker --gpu`) serve. Empty: the job queue's name with -gpu.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(default=8000, description="Port the API listens on.")
    worker_concurrency: int = Field(default=1, ge=1, description="Jobs one worker runs at once.")
    jobs_per_child: int = Field(
        default=20,
        ge=1,
        description="Jobs one pool child process runs before it is replaced by a fresh one. A "
        "child warms up once (imports torch, makes the runtimes' first calls) and keeps that "
        "for its next jobs.",
    )
    job_child_max_memory_mb: int = Field(
        default=3072,
        ge=256,
        description="A pool child whose resident memory is above this after a job is replaced "
        "by a fresh one before the next job.",
    )
    job_threads: int = Field(
        default=0,
        ge=0,
        description="Threads each job's training uses (torch intra-op). 0: this machine's "
        "cores divided among worker_concurrency jobs, less one core for the API in the embedded "
        "default (it serves beside the worker).",
    )
    inspect_concurrency: int = Field(
        default=1,
        ge=1,
        description="Uploads one worker inspects at once, in a pool of its own beside the job "
        "pool, so an upload is inspected while every job slot trains.",
    )
    upload_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long POST /v1/teachers waits for a worker's inspection before it "
        "answers `processing` (the client then polls the teacher).",
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest accepted upload, counted on bytes read."
    )
    max_decoded_bytes: int = Field(
        default=4 * 1024**3,
        ge=1024**2,
        description="Largest a dataset may be once decoded (as float32, on disk); a small "
        "upload may decode to at most 1000 times its size (zip and Parquet bombs).",
    )
    max_dataset_features: int = Field(
        default=3 * 1024 * 1024,
        ge=1,
        description="Values in one row of a dataset (CSV/Parquet features, an NPZ row, "
        "channels x height x width of an image). A row is converted whole.",
    )
    max_table_columns: int = Field(
        default=100_000,
        ge=2,
        description="Columns of a CSV or Parquet dataset (a CSV row is held as one Python "
        "string per cell while it is parsed).",
    )
    max_csv_line_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Longest CSV record (header or row) the parser reads before splitting it.",
    )
    max_images: int = Field(
        default=60_000,
        ge=1,
        description="Members of an image-archive (or any zip) upload; the archive's directory "
        "is held in memory.",
    )
    max_image_pixels: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="Pixels of one image before resizing (decoded whole, about 4 bytes a "
        "pixel); JPEGs are first decoded at a reduced scale when image_size allows.",
    )
    max_job_memory_bytes: int = Field(
        default=8 * 1024**3,
        ge=64 * 1024**2,
        description="Memory a job may need on its worker, estimated at submission from the "
        "student, batch size and data (rows, weights, gradients, Adam moments, activations); "
        "a job estimated over it is refused with a 422. Set it to what one worker has.",
    )
    max_student_parameters: int = Field(
        default=100_000_000,
        ge=10,
        description="Parameters of any model a job trains (student, teacher assistant, VAE).",
    )
    auto_transfer_max_rows: int = Field(
        default=50_000,
        ge=0,
        le=5_000_000,
        description='The most rows a job\'s default transfer set ("transfer": "auto") '
        "synthesizes; it makes 20 per labeled row, at least 10,000. 0: none by default.",
    )
    blob_chunk_bytes: int = Field(
        default=1024 * 1024, ge=4096, description="Size of the chunks blobs are stored in."
    )
    inspect_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Wall-clock limit for inspecting an uploaded teacher."
    )
    teacher_memory_bytes: int = Field(
        default=4 * 1024**3,
        ge=1024**3,
        description="Address-space limit of the process that inspects or runs a teacher (it "
        "holds the runtime too: about 1 GiB before any model; on a GPU, a data limit and its "
        "GPU memory limit). The teacher's batch is sized from it. Over it, the upload is "
        "refused or the job fails with teacher_resource_limit.",
    )
    teacher_cpu_seconds: int = Field(
        default=3600,
        ge=1,
        description="CPU-time limit of the process that runs a job's teacher (inspection gets "
        "at most inspect_timeout_seconds). Over it, the job fails with teacher_resource_limit.",
    )
    cache_dir: Path | None = Field(
        default=None, description="Worker cache of blobs by sha256. Empty: data_dir/cache."
    )
    log_level: str = Field(default="INFO", description="Log level of API and worker.")
    heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a worker renews the lease of the job it runs."
    )
    lease_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A running job whose heartbeat is older than this is requeued by the relay.",
    )
    reaper_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often each worker publishes the outbox and reaps."
    )
    republish_after_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A job still queued this long after its message was sent is sent again "
        "(a broker that lost its messages, e.g. a Redis restart, loses no job).",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Runs of a job (first + takeovers) before it fails."
    )
    job_time_limit_seconds: int = Field(
        default=6 * 3600,
        ge=1,
        description="Default time limit of a job (jobs may ask for less); then it fails.",
    )
    failpoint: str = Field(
        default="",
        description="Fault tests only: crash the API at this point ('after_job_commit': "
        "between a job's commit and its publish). Leave empty.",
    )
    max_active_jobs_per_tenant: int = Field(
        default=20, ge=1, description="Queued plus running jobs one tenant may have (then 429)."
    )
    rate_limit_per_second: float = Field(
        default=50.0,
        ge=0,
        description="Requests per second each API key (or anonymous client address) may make, "
        "on average, across all API processes when the broker is Redis (the buckets live "
        "there); more get 429 with Retry-After. 0 turns rate limiting off.",
    )
    rate_limit_burst: int = Field(
        default=200, ge=1, description="Requests a key may make at once before the rate applies."
    )
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long an API process trusts a key it has looked up before it looks "
        "again: a key revoked in the database stops working within this. 0: every request.",
    )
    anonymous: bool = Field(
        default=True,
        description="Serve requests without an API key (as tenant 'local'). Honoured only while "
        "the API listens on loopback; elsewhere every request needs a key.",
    )

    @property
    def inspection_queue_name(self) -> str:
        return f"{self.queue_name}.inspect"

    @property
    def resolved_gpu_queue_name(self) -> str:
        return self.gpu_queue_name or f"{self.queue_name}-gpu"

    def job_queue(self, gpu: bool) -> str:
        """The queue a job's message goes to: the GPU queue for a job that asks for one."""
        return self.resolved_gpu_queue_name if gpu else self.queue_name

    @property
    def anonymous_allowed(self) -> bool:
        return self.anonymous and self.api_host in ("127.0.0.1", "localhost", "::1")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'distillery.db').resolve()}"

    @property
    def resolved_job_threads(self) -> int:
        if self.job_threads:
            return self.job_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        spare = (cores or 1) - (1 if self.embedded_broker else 0)
        return max(1, spare // self.worker_concurrency)

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url or self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def tmp_dir(self) -> Path:
        return (self.data_dir / "tmp").resolve()

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.data_dir / "cache").resolve()

    def ensure_dirs(self) -> None:
        for folder in (self.data_dir, self.tmp_dir, self.resolved_cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.embedded_broker:
            (self.broker_folder / "queue").mkdir(parents=True, exist_ok=True)
            (self.broker_folder / "processed").mkdir(parents=True, exist_ok=True)
            (self.broker_folder / "control").mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
