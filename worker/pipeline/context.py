"""One attempt at one job, as every stage sees it: the lease it writes under, the settings,
the typed spec, a scratch folder, and the job's live progress."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.jobs.events import EventType, record_event
from app.jobs.metrics import EpochMetrics, JobProgress
from app.jobs.spec import JobSpec
from app.jobs.state import enter_stage
from app.models import Job
from app.settings import Settings
from worker.engine.logit_cache import DiskLogitCache
from worker.engine.training import EpochRecord
from worker.lease import JobCancelled, Lease

# How often a training job's row takes its progress (curves, epoch): pollers poll about once
# a second; every epoch is an event regardless.
PROGRESS_SECONDS = 0.5


@dataclass
class Progress:
    """The curves so far, shown on the job while it trains (JobProgress)."""

    history: list[EpochMetrics] = field(default_factory=list)
    scratch: list[EpochMetrics] = field(default_factory=list)

    def view(self) -> JobProgress:
        return JobProgress(
            latest=self.history[-1] if self.history else None,
            latest_scratch=self.scratch[-1] if self.scratch else None,
            history=self.history,
            history_scratch=self.scratch,
        )


@dataclass
class JobRun:
    lease: Lease
    settings: Settings
    spec: JobSpec
    workdir: Path
    progress: Progress = field(default_factory=Progress)
    cache: DiskLogitCache = field(init=False)
    _reported_at: float = field(default=-float("inf"), init=False)

    def __post_init__(self) -> None:
        self.cache = DiskLogitCache(self.settings.resolved_cache_dir / "teacher_outputs")

    @property
    def job_id(self) -> str:
        return self.lease.job_id

    def stage(self, name: str) -> None:
        """Enter a stage (shown on the job, with an event); a cancel requested since stops here."""

        def enter(session: Session) -> None:
            job = session.get(Job, self.job_id)
            if job is None or job.cancel_requested:
                raise JobCancelled()
            enter_stage(session, self.job_id, name)

        self.lease.write(enter, "setting the stage")

    def event(self, type: EventType, message: str, data: dict[str, Any] | None = None) -> None:
        self.lease.write(lambda s: record_event(s, self.job_id, type, message, data), "event")

    def update(self, **values: Any) -> None:
        self.lease.write(
            lambda s: s.execute(update(Job).where(Job.id == self.job_id).values(**values)),
            "updating the job",
        )

    def on_epoch(self, record: EpochRecord) -> None:
        if record.epoch == 1:  # a new run (a checkpoint's student) starts its own curve
            self.progress.history.clear()
        self.progress.history.append(EpochMetrics.model_validate(asdict(record)))
        self._report(record, "student", f"epoch {record.epoch}", epoch=record.epoch)

    def on_baseline_epoch(self, record: EpochRecord) -> None:
        if record.epoch == 1:  # a new scratch run (a search's candidate) starts its own curve
            self.progress.scratch.clear()
        self.progress.scratch.append(EpochMetrics.model_validate(asdict(record)))
        self._report(record, "scratch", f"scratch epoch {record.epoch}")

    def _report(self, record: EpochRecord, phase: str, message: str, **values: Any) -> None:
        # Every epoch is an event; the job's row (its curves so far, which every poll reads
        # and which grow with the epochs) is rewritten at most every PROGRESS_SECONDS, and at
        # a run's first and last epochs. Small fast epochs would otherwise rewrite it, and
        # wake every API process's cache, tens of times a second.
        now = time.monotonic()
        due = (
            now - self._reported_at >= PROGRESS_SECONDS
            or record.epoch in (1, self.spec.training.epochs)
        )

        def write(session: Session) -> None:
            if due:
                metrics = self.progress.view().model_dump(mode="json")
                session.execute(
                    update(Job).where(Job.id == self.job_id).values(metrics=metrics, **values)
                )
            record_event(
                session, self.job_id, "metrics", message, {"phase": phase, **asdict(record)}
            )

        # One transaction per epoch: the job's progress (when due) and its event land together.
        self.lease.write(write, "reporting an epoch")
        if due:
            self._reported_at = now
