"""Tables: blobs (chunked bytes), teachers, datasets, jobs and their artifacts."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from app.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the zone on the way back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


LOCAL_TENANT = "local"  # anonymous requests, where the service allows them (loopback only)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Blob(Base):
    """Bytes of an upload or artifact, stored as ordered chunks so nothing is held whole."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BlobChunk(Base):
    __tablename__ = "blob_chunks"

    blob_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Teacher(Base):
    """An uploaded model. What it is (format, shapes, classes) is known once a worker has
    inspected it: until then it is `processing`, after that `ready` or `invalid` (with the
    inspector's error code and message)."""

    __tablename__ = "teachers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, server_default=LOCAL_TENANT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    filename: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    blob_id: Mapped[str] = mapped_column(String(40), ForeignKey("blobs.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    input_shape: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parameters: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    output_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    output_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    inspection: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    inspected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def hint_candidates(self) -> list[str]:
        return list((self.inspection or {}).get("hint_candidates", []))

    @property
    def modality(self) -> str | None:
        if self.status != "ready":
            return None
        return str((self.inspection or {}).get("modality", "tensor"))

    def _inspected(self, key: str) -> Any:
        return (self.inspection or {}).get(key)

    @property
    def class_names(self) -> list[str] | None:
        found = self._inspected("class_names")
        return [str(n) for n in found] if isinstance(found, list) else None

    @property
    def input_names(self) -> list[str] | None:
        found = self._inspected("input_names")
        return [str(n) for n in found] if isinstance(found, list) else None

    @property
    def vocab_size(self) -> int | None:
        found = self._inspected("vocab_size")
        return int(found) if isinstance(found, int) else None

    @property
    def max_length(self) -> int | None:
        found = self._inspected("max_length")
        return int(found) if isinstance(found, int) else None

    @property
    def error(self) -> dict[str, str] | None:
        if self.error_code is None:
            return None
        return {"code": self.error_code, "message": self.error_message or ""}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, server_default=LOCAL_TENANT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(16))
    blob_id: Mapped[str] = mapped_column(String(40), ForeignKey("blobs.id"))
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    feature_shape: Mapped[list[int]] = mapped_column(JSON)
    num_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    labeled: Mapped[bool] = mapped_column(Boolean)
    class_counts: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    label_column: Mapped[str | None] = mapped_column(String(255), nullable=True)
    class_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)

    @property
    def modality(self) -> str:
        """text for text datasets (texts tokenized by the job), tensor for the rest."""
        return "text" if self.format.startswith("text-") else "tensor"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True, server_default=LOCAL_TENANT)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    # The validated request, versioned (app/jobs/spec.py JobSpec): teachers, datasets, options.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    split: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The lease: who runs the job now. The token grows on every claim and every requeue, and
    # every write a worker makes names its token, so a worker that lost the lease writes nothing.
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    time_limit_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)


class OutboxMessage(Base):
    """A message to publish, written in the transaction that made it necessary (a new job, a
    requeue, an upload to inspect). A relay publishes it after the commit; a crash in between
    loses nothing. It names a job to run or a teacher to inspect."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True
    )
    teacher_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("teachers.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WorkerSeen(Base):
    """Each worker pool's last sign of life (its relay writes it every pass): /readyz says
    when no worker serves a queue, which leaves jobs queued and uploads processing."""

    __tablename__ = "workers_seen"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    queue: Mapped[str] = mapped_column(String(255), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IdempotencyKey(Base):
    """A client's Idempotency-Key: the request it first came with and what that created."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TrainingCheckpoint(Base):
    """The latest per-epoch checkpoint of each training run of a job, in the shared store."""

    __tablename__ = "training_checkpoints"

    job_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    run: Mapped[str] = mapped_column(String(32), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"

    job_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    blob_id: Mapped[str] = mapped_column(String(40), ForeignKey("blobs.id"))
    media_type: Mapped[str] = mapped_column(String(128))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobEvent(Base):
    """What happened to a job, in order: state changes, messages, per-epoch metrics."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    type: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ApiKey(Base):
    """A bearer token for one tenant. Only its sha256 is stored; the secret is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
