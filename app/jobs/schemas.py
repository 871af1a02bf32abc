"""The public views of jobs, their events and their artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.jobs.metrics import MetricsView, SplitReport
from app.jobs.spec import (
    AssistantsConfig,
    CrossDomainConfig,
    KDMethodConfig,
    ResourcesConfig,
    SearchConfig,
    StudentConfig,
    TrainingConfig,
    TransferConfig,
)
from app.jobs.state import JobStatus


class JobError(BaseModel):
    code: str
    message: str


class JobPublic(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    stage: str
    epoch: int
    epochs: int
    metrics: MetricsView | None = Field(
        description="Latest metrics while running; the full report once succeeded."
    )
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested: bool
    attempts: int = Field(
        default=0, description="Runs so far: 1, or more once a worker died and another took over."
    )
    worker: str | None = Field(default=None, description="The worker that runs (or ran) it.")
    time_limit_seconds: int | None = None
    teacher_id: str
    teacher_ids: list[str]
    teacher_checkpoint_ids: list[str]
    train_dataset_id: str
    validation_dataset_id: str | None
    test_dataset_id: str | None
    student: StudentConfig
    method: KDMethodConfig
    training: TrainingConfig
    split: SplitReport | None
    transfer_dataset_ids: list[str]
    transfer: TransferConfig | Literal["auto"] | None
    assistants: AssistantsConfig | None
    cross_domain: CrossDomainConfig | None = None
    search: SearchConfig | Literal["auto"] | None = None
    quantize: bool = True
    baseline: bool
    resources: ResourcesConfig = ResourcesConfig()


class JobEventPublic(BaseModel):
    id: int
    object: Literal["job.event"] = "job.event"
    created_at: datetime
    type: Literal["state", "message", "metrics"]
    message: str
    data: dict[str, Any] | None


class ArtifactPublic(BaseModel):
    name: str
    object: Literal["artifact"] = "artifact"
    media_type: str
    bytes: int
    sha256: str
    created_at: datetime
    url: str
